#!/usr/bin/env bash
# The ledger's SQL functions called from bash with psql (14 or later).
#
#   LEDGER_DATABASE_URL=postgresql://user:password@host:5432/db ./ledger_example.sh
#
# Posts an entry, posts it again with the same idempotency key (a replay:
# same entry, nothing written), reads the balance, then tries a debit the
# owner cannot afford and catches the ledger's error by its SQLSTATE (LG001)
# and reads its JSON DETAIL. Values reach psql as variables (-v name=value)
# and enter the SQL only as :'name', which psql sends as a correctly quoted
# literal: no value is ever pasted into the SQL text by the shell. Exits 0
# when everything is as expected, 1 otherwise.
set -euo pipefail

INSUFFICIENT_CREDITS=LG001

fail() {
    echo "FAILED: $*" >&2
    exit 1
}

[ -n "${LEDGER_DATABASE_URL:-}" ] \
    || fail "set LEDGER_DATABASE_URL to the URL of a migrated ledger database"
command -v psql >/dev/null || fail "psql is not installed"

# sql NAME=VALUE...: runs the SQL read on standard input with those psql
# variables; prints one line per row, columns separated by '|'. -X skips
# ~/.psqlrc, so the output format is always the one parsed here.
sql() {
    local variables=()
    local pair
    for pair in "$@"; do
        variables+=(-v "$pair")
    done
    psql "$LEDGER_DATABASE_URL" -X -q -A -t -v ON_ERROR_STOP=1 "${variables[@]}"
}

# post_entry OPERATION KEY AMOUNT: entry_id|amount|balance|replayed
post_entry() {
    sql owner="$owner" operation="$1" key="$2" amount="$3" <<'SQL'
SELECT entry_id, amount, balance, replayed
FROM ledger.post_entry(owner_id => :'owner', app => 'core', operation => :'operation',
                       idempotency_key => :'key', amount => :'amount');
SQL
}

as_word() {  # psql prints booleans as t/f
    case "$1" in t) echo true ;; f) echo false ;; *) echo "$1" ;; esac
}

# A new owner on every run, so the example can run again and again.
owner="example-psql-$(date +%s)-$$-$RANDOM"
key="$owner-purchase-1"
amount=50
too_much=1000000

echo "owner $owner"

IFS='|' read -r entry_id posted balance replayed < <(post_entry CREDIT_ADD "$key" "$amount") \
    || fail "post_entry returned nothing"
echo "posted entry $entry_id: amount $posted, balance $balance, replayed $(as_word "$replayed")"
[ "$replayed" = f ] || fail "the first post was marked as a replay"
[ "$balance" = "$amount" ] || fail "balance $balance after the first post"

IFS='|' read -r again_id _ again_balance again_replayed < <(post_entry CREDIT_ADD "$key" "$amount") \
    || fail "post_entry returned nothing"
echo "posted again with the same key: entry $again_id, balance $again_balance, replayed $(as_word "$again_replayed")"
[ "$again_replayed" = t ] || fail "the second post with the same key was not a replay"
[ "$again_id" = "$entry_id" ] || fail "the replay returned entry $again_id"
[ "$again_balance" = "$balance" ] || fail "the replay changed the balance"

IFS='|' read -r balance_owner balance held available updated_at < <(sql owner="$owner" <<'SQL'
SELECT owner_id, balance, held, available, updated_at FROM ledger.get_balance(owner_id => :'owner');
SQL
) || fail "get_balance returned nothing"
echo "balance of $balance_owner: balance $balance, held $held, available $available, updated at $updated_at"
[ "$balance" = "$amount" ] || fail "balance $balance"
[ "$held" = 0 ] || fail "held $held"
[ "$available" = "$amount" ] || fail "available $available"

# The debit is expected to fail: ON_ERROR_STOP is turned off for it, psql's
# SQLSTATE variable then holds the error's code (psql 11 and later), and the
# error itself, with its DETAIL line, goes to standard error. LC_ALL=C keeps
# the "DETAIL:" label untranslated.
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
sqlstate=$(LC_ALL=C sql owner="$owner" key="$owner-spend-1" amount="$too_much" 2>"$errors" <<'SQL'
\set ON_ERROR_STOP off
SELECT entry_id FROM ledger.post_entry(owner_id => :'owner', app => 'core', operation => 'CREDIT_SPEND',
                                       idempotency_key => :'key', amount => :'amount');
\echo :SQLSTATE
SQL
) || fail "psql failed: $(cat "$errors")"
if [ "$sqlstate" != "$INSUFFICIENT_CREDITS" ]; then
    fail "expected SQLSTATE $INSUFFICIENT_CREDITS for a debit of $too_much, got: $sqlstate $(cat "$errors")"
fi
detail=$(sed -n 's/^DETAIL:  //p' "$errors")
[ -n "$detail" ] || fail "no DETAIL in: $(cat "$errors")"

# The DETAIL is a JSON object: PostgreSQL reads it (no JSON tool needed).
IFS='|' read -r detail_owner needed detail_available < <(sql detail="$detail" <<'SQL'
SELECT d->>'owner_id', d->>'needed', d->>'available' FROM (SELECT CAST(:'detail' AS json) AS d) AS error;
SQL
) || fail "cannot read the DETAIL: $detail"
echo "debit of $too_much refused: SQLSTATE $sqlstate (insufficient_credits), needed $needed, available $detail_available"
[ "$detail_owner" = "$owner" ] || fail "the error names owner $detail_owner"
[ "$needed" = "$too_much" ] || fail "the error says $needed needed"
[ "$detail_available" = "$amount" ] || fail "the error says $detail_available available"

echo "all as expected"
