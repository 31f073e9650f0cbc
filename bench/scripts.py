"""The pgbench scripts of the scenarios (SQL the clients send, -M prepared).

Owners are 'o1'..'o10000' (pre-created, funded) and 'hot'. Idempotency keys
are unique per transaction: a random bigint drawn per transaction (a
collision in 9e18 would be a replay, not an error).
"""

from __future__ import annotations

OWNERS = 10_000

_KEY = "\\set key random(1, 9000000000000000000)\n"
_OWNER = f"\\set owner random(1, {OWNERS})\n"

# Pure PostgreSQL, the same physical work as one credit: update the account
# row, append the entry row with its keys and timestamps, in tables with the
# ledger's columns, constraints and indexes (schema `floor`), one statement.
FLOOR_UNIFORM = (
    _OWNER
    + _KEY
    + """\
WITH a AS (
    UPDATE floor.accounts SET balance = balance + 1, last_seq = last_seq + 1,
        updated_at = clock_timestamp()
    WHERE owner_id = 'o' || :owner
    RETURNING owner_id, balance, last_seq, updated_at)
INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance, idempotency_key,
                           fingerprint, metadata, created_at, created_by)
SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_ADD', 1, a.balance, 'k' || :key,
       md5('k' || :key)::uuid, '{}', a.updated_at, current_user
FROM a
RETURNING entry_id, balance;
"""
)

# The same statement inside a PL/pgSQL SECURITY DEFINER function, called as
# ledger functions are (see bench/dataset.py: FLOOR_FUNCTION).
FLOOR_FUNCTION_UNIFORM = (
    _OWNER + _KEY + "SELECT * FROM floor.credit('o' || :owner, 'k' || :key, 1);\n"
)

# The same for a debit of the one hot owner, with the balance check in the WHERE.
FLOOR_HOT = (
    _KEY
    + """\
WITH a AS (
    UPDATE floor.accounts SET balance = balance - 1, last_seq = last_seq + 1,
        updated_at = clock_timestamp()
    WHERE owner_id = 'hot' AND balance >= 1
    RETURNING owner_id, balance, last_seq, updated_at)
INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance, idempotency_key,
                           fingerprint, metadata, created_at, created_by)
SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_SPEND', -1, a.balance, 'k' || :key,
       md5('k' || :key)::uuid, '{}', a.updated_at, current_user
FROM a
RETURNING entry_id, balance;
"""
)

ONE_ROW_UPDATE = "UPDATE bench_counter SET v = v + 1 WHERE id = 1;\n"

POST_ENTRY_UNIFORM = (
    _OWNER
    + _KEY
    + """\
SELECT * FROM ledger.post_entry('o' || :owner, 'bench', 'CREDIT_ADD', 'k' || :key, 1);
"""
)

POST_ENTRY_HOT = (
    _KEY
    + """\
SELECT * FROM ledger.post_entry('hot', 'bench', 'CREDIT_SPEND', 'k' || :key, 1);
"""
)

TRANSFER_UNIFORM = (
    f"""\
\\set a random(1, {OWNERS})
\\set b (:a + random(1, {OWNERS - 1}) - 1) % {OWNERS} + 1
"""
    + _KEY
    + """\
SELECT * FROM ledger.transfer('o' || :a, 'o' || :b, 1, 'bench', 't' || :key);
"""
)

GET_BALANCE = _OWNER + "SELECT * FROM ledger.get_balance('o' || :owner);\n"

BATCH_SIZE = 1_000

# The JSON array is built by the server: that costs post_entries a little
# (a real client sends it ready-made), so the ratio errs on the low side.
POST_ENTRIES_BATCH = (
    f"""\
\\set base random(0, {OWNERS - 1})
"""
    + _KEY
    + f"""\
SELECT count(*) FROM ledger.post_entries((
    SELECT jsonb_agg(jsonb_build_object(
               'owner_id', 'o' || ((:base + g) % {OWNERS} + 1), 'app', 'bench',
               'operation', 'CREDIT_ADD', 'idempotency_key', 'b' || :key || '-' || g,
               'amount', 1) ORDER BY g)
    FROM generate_series(1, {BATCH_SIZE}) g));
"""
)

# The physical floor of a batch: the same 1,000 entries and account updates
# as POST_ENTRIES_BATCH, as one plain statement on the floor tables.
FLOOR_BATCH = (
    f"""\
\\set base random(0, {OWNERS - 1})
"""
    + _KEY
    + f"""\
WITH items AS (
    SELECT g, 'o' || ((:base + g) % {OWNERS} + 1) AS owner_id, 'b' || :key || '-' || g AS k
    FROM generate_series(1, {BATCH_SIZE}) g),
a AS (
    UPDATE floor.accounts a SET balance = a.balance + 1, last_seq = a.last_seq + 1,
        updated_at = clock_timestamp()
    FROM items i WHERE a.owner_id = i.owner_id
    RETURNING a.owner_id, a.balance, a.last_seq, a.updated_at)
INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance, idempotency_key,
                           fingerprint, metadata, created_at, created_by)
SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_ADD', 1, a.balance, i.k, md5(i.k)::uuid, '{{}}',
       a.updated_at, current_user
FROM items i JOIN a USING (owner_id)
ORDER BY i.g;
"""
)

LIST_ENTRIES_FIRST_PAGE = _OWNER + "SELECT * FROM ledger.list_entries('o' || :owner);\n"


def list_entries_deep_page(max_entry_id: int) -> str:
    """A page of 100 from a random point of the owner's history (keyset: after_id, an
    entry of that owner, found by a random seq; none: the first page)."""
    return (
        _OWNER
        + f"""\
\\set seq random(1, {max(1, max_entry_id // OWNERS)})
SELECT * FROM ledger.list_entries('o' || :owner, (SELECT e.entry_id FROM ledger.entries e
    WHERE e.owner_id = 'o' || :owner AND e.seq = :seq));
"""
    )
