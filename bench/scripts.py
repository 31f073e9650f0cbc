"""The pgbench scripts of the scenarios (SQL the clients send, -M prepared).

Owners are 'o1'..'o10000' (pre-created, funded) and 'hot'; for the pair of
debits over grants, 'e1'..'e10000' (three expiring grants each) and
'n1'..'n10000' (one never-expiring grant each). Idempotency keys are unique
per transaction: a random bigint drawn per transaction (a collision in 9e18
would be a replay, not an error).
"""

from __future__ import annotations

OWNERS = 10_000
EXPIRING = "e"  # owner prefix: three active expiring grants each
NEVER_EXPIRING = "n"  # owner prefix: one never-expiring grant each

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

# The grants floor: the bare floor plus the grant rows the ledger writes
# now, still one plain statement on the floor tables. A credit also makes
# its grant (never expiring, as CREDIT_ADD's).
# Its credit's account and entry (the CTEs the full floor reuses), then the grant.
_CREDIT_ROWS = """\
WITH a AS (
    UPDATE floor.accounts SET balance = balance + 1, last_seq = last_seq + 1,
        updated_at = clock_timestamp()
    WHERE owner_id = 'o' || :owner
    RETURNING owner_id, balance, last_seq, updated_at),
e AS (
    INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance, idempotency_key,
                               fingerprint, metadata, created_at, created_by)
    SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_ADD', 1, a.balance, 'k' || :key,
           md5('k' || :key)::uuid, '{}', a.updated_at, current_user
    FROM a
    RETURNING *),
"""
_CREDIT_GRANT = """\
INSERT INTO floor.grants (owner_id, entry_id, seq, app, operation, amount, remaining, priority,
                          expires_at, created_at)
SELECT e.owner_id, e.entry_id, e.seq, 'bench', 'CREDIT_ADD', e.amount, e.amount, 50, NULL,
       e.created_at
FROM e
"""
FLOOR_GRANTS_UNIFORM = (
    _OWNER
    + _KEY
    + _CREDIT_ROWS.removesuffix(",\n")
    + "\n"
    + _CREDIT_GRANT
    + "RETURNING entry_id;\n"
)

# A debit of the hot owner with its grant rows: the first grant in spending
# order (found through the same partial index the ledger reads) loses the
# credit, and one spending row records it. The account, entry and grant
# update are CTEs the full floor reuses.
_DEBIT_ROWS = """\
WITH a AS (
    UPDATE floor.accounts SET balance = balance - 1, last_seq = last_seq + 1,
        updated_at = clock_timestamp()
    WHERE owner_id = 'hot' AND balance >= 1
    RETURNING owner_id, balance, last_seq, updated_at),
e AS (
    INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance, idempotency_key,
                               fingerprint, metadata, created_at, created_by)
    SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_SPEND', -1, a.balance, 'k' || :key,
           md5('k' || :key)::uuid, '{}', a.updated_at, current_user
    FROM a
    RETURNING *),
g AS (
    UPDATE floor.grants g SET remaining = g.remaining - 1
    FROM e
    WHERE g.owner_id = e.owner_id
      AND g.grant_id = (SELECT nxt.grant_id FROM floor.grants nxt
                        WHERE nxt.owner_id = 'hot' AND nxt.status = 'active' AND nxt.remaining > 0
                        ORDER BY nxt.priority, nxt.expires_at, nxt.seq, nxt.grant_id
                        LIMIT 1)
    RETURNING g.owner_id, g.grant_id)
"""
_DEBIT_SPENDING = """\
INSERT INTO floor.grant_spending (owner_id, entry_id, grant_id, seq, amount)
SELECT e.owner_id, e.entry_id, g.grant_id, e.seq, -1
FROM e JOIN g USING (owner_id)
"""
FLOOR_GRANTS_HOT = _KEY + _DEBIT_ROWS + _DEBIT_SPENDING + "RETURNING entry_id;\n"

# The full floor: the grants floor plus the entry.posted event row the
# ledger writes with every entry (its payload built from the entry's columns,
# as the ledger's is), still one plain statement on the floor tables. This
# is the same physical work as a ledger write: account, entry, grant or
# spending rows, event.
_EVENT_ROW = """\
INSERT INTO floor.events (owner_id, type, seq, entry_id, app, payload, occurred_at, recorded_at)
SELECT e.owner_id, 'entry.posted', e.seq, e.entry_id, e.app,
       jsonb_strip_nulls(jsonb_build_object(
           'entry_id', e.entry_id, 'owner_id', e.owner_id, 'app', e.app, 'operation', e.operation,
           'amount', e.amount, 'balance', e.balance, 'seq', e.seq, 'created_at', e.created_at,
           'idempotency_key', e.idempotency_key))
         || jsonb_build_object('metadata', e.metadata),
       e.created_at, e.created_at
FROM e
"""

FLOOR_FULL_UNIFORM = (
    _OWNER
    + _KEY
    + _CREDIT_ROWS
    + "g AS (\n"
    + _CREDIT_GRANT
    + ")\n"
    + _EVENT_ROW
    + "RETURNING entry_id;\n"
)

FLOOR_FULL_HOT = (
    _KEY
    + _DEBIT_ROWS.removesuffix("\n")
    + ",\ns AS (\n"
    + _DEBIT_SPENDING
    + ")\n"
    + _EVENT_ROW
    + "RETURNING entry_id;\n"
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

# The pair of debits over grants: the same call for an owner whose three
# grants expire (in years) and for one whose single grant never does.
DEBIT_EXPIRING = (
    _OWNER
    + _KEY
    + f"""\
SELECT * FROM ledger.post_entry('{EXPIRING}' || :owner, 'bench', 'CREDIT_SPEND', 'k' || :key, 1);
"""
)
DEBIT_NEVER_EXPIRING = (
    _OWNER
    + _KEY
    + f"""\
SELECT * FROM ledger.post_entry('{NEVER_EXPIRING}' || :owner, 'bench', 'CREDIT_SPEND', 'k' || :key,
                                1);
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
