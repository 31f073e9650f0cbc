"""Setting up what the scenarios run against (setup, never measured): the
migrated ledger with funded owners, the owners of the grant scenarios, the
`floor` copy of its tables, the one-row table, pgbench's tables, the
5,000,000-entry history and the due grants of the expiry scenario."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench import pgbench
from bench.scripts import EXPIRING, NEVER_EXPIRING, OWNERS
from ledger_py.migrate import migrate

FUNDING = 1_000_000  # credits of each uniform owner (the largest CREDIT_ADD)
HOT_FUNDING_CALLS = 20  # the hot owner gets 20 x 1,000,000: enough for any run
ALERT_THRESHOLD = 10  # app `alerts`' low-balance threshold (every owner stays above it)

# The owners of the expiring-grants pair (bench/scripts.py): each `e` owner
# has three grants of 1,000,000 that expire 10, 11 and 12 years from the
# setup (far enough that no run reaches them, big enough that no run spends
# one); each `n` owner one never-expiring grant of 1,000,000.
EXPIRING_GRANT_YEARS = (10, 11, 12)
BENCH_EXPIRING = "BENCH_EXPIRING"  # the credit operation of their grants (app bench)


def database_url(server_url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path="/" + dbname))


def create_database(server_url: str, dbname: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return database_url(server_url, dbname)


def prepare_ledger(url: str) -> None:
    """Migrate, register the app `bench`, fund owners o1..o10000 and `hot`
    through ledger.post_entry itself, so balances and entries agree."""
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT ledger.define_app('bench', 'benchmarks')")
        # One app with a balance alert, as a ledger with events in use has:
        # every write then compares the owner's available credits before and
        # after it (the threshold is below every funded owner's balance, so
        # no alert fires: the cost measured is the check's).
        conn.execute("SELECT ledger.define_app('alerts', 'an app with a low-balance alert')")
        conn.execute("SELECT ledger.set_balance_alert('alerts', %s)", (ALERT_THRESHOLD,))
        conn.execute(
            "SELECT count(ledger.post_entry('o' || g, 'bench', 'CREDIT_ADD', 'fund-' || g, %s))"
            " FROM generate_series(1, %s) g",
            (FUNDING, OWNERS),
        )
        conn.execute(
            "SELECT count(ledger.post_entry('hot', 'bench', 'CREDIT_ADD', 'fund-hot-' || g, %s))"
            " FROM generate_series(1, %s) g",
            (FUNDING, HOT_FUNDING_CALLS),
        )
        conn.execute("VACUUM ANALYZE ledger.accounts, ledger.entries, ledger.grants")


def prepare_grant_owners(url: str) -> None:
    """The owners of the expiring-grants pair, funded through the ledger's
    own functions (grant_credits with an explicit expires_at, post_entry),
    so their accounts, entries and grants are what those calls write."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT ledger.define_operation('bench', %s, 'credit', caller_sets_amount => true,"
            " max_amount => %s, expires_after => interval '20 years',"
            " description => 'benchmark grants that expire in years')",
            (BENCH_EXPIRING, FUNDING),
        )
        for years in EXPIRING_GRANT_YEARS:
            conn.execute(
                "SELECT count(ledger.grant_credits(%(prefix)s || g, 'bench', %(op)s,"
                " 'fund-' || %(years)s || '-' || g, %(amount)s,"
                " expires_at => now() + %(years)s * interval '1 year'))"
                " FROM generate_series(1, %(owners)s) g",
                {
                    "prefix": EXPIRING,
                    "op": BENCH_EXPIRING,
                    "years": years,
                    "amount": FUNDING,
                    "owners": OWNERS,
                },
            )
        conn.execute(
            "SELECT count(ledger.post_entry(%s || g, 'bench', 'CREDIT_ADD', 'fund-' || g, %s))"
            " FROM generate_series(1, %s) g",
            (NEVER_EXPIRING, FUNDING, OWNERS),
        )
        conn.execute("VACUUM ANALYZE ledger.accounts, ledger.entries, ledger.grants")


# The floor's statement inside a function called the way ledger functions
# are (PL/pgSQL, SECURITY DEFINER, pinned search_path, a composite result,
# `SELECT * FROM f(...)`): what the call form alone costs, with none of the
# ledger's checks.
FLOOR_FUNCTION = """
CREATE FUNCTION floor.credit(p_owner text, p_key text, p_amount bigint)
RETURNS TABLE (entry_id bigint, balance bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH a AS (
        UPDATE floor.accounts x SET balance = x.balance + p_amount, last_seq = x.last_seq + 1,
        updated_at = clock_timestamp()
        WHERE x.owner_id = p_owner
        RETURNING x.owner_id, x.balance, x.last_seq, x.updated_at)
    INSERT INTO floor.entries AS e (owner_id, seq, app, operation, amount, balance,
                                    idempotency_key, fingerprint, metadata, created_at, created_by)
    SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_ADD', p_amount, a.balance, p_key,
           md5(p_key)::uuid, '{}', a.updated_at, session_user
    FROM a
    RETURNING e.entry_id, e.balance;
END
$$
"""


# The ledger's tables the floor copies: the account, the journal, the
# grants with their spending rows (the grants floor writes those too) and
# the events outbox (the full floor writes its entry.posted row).
FLOOR_TABLES = ("accounts", "entries", "grants", "grant_spending", "events")


def prepare_floor(url: str) -> list[str]:
    """Schema `floor`: accounts, entries, grants and grant_spending with the
    ledger's columns, defaults, identity, CHECK constraints and indexes
    (LIKE ... INCLUDING ALL) plus its foreign keys, read from the catalog so
    that a later migration is followed. The append-only triggers are left
    out: they fire on UPDATE, DELETE and TRUNCATE only, never on the write
    path (the grants' no-DELETE trigger lets an UPDATE through). The owners
    get the funding grants the ledger's owners have (one of 1,000,000 each,
    20 for `hot`), never expiring. Returns the foreign keys added."""
    added: list[str] = []
    tables = [f"ledger.{t}" for t in FLOOR_TABLES]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS floor CASCADE")
        conn.execute("CREATE SCHEMA floor")
        for table in FLOOR_TABLES:
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier("floor", table), sql.Identifier("ledger", table)
                )
            )
        fks = conn.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
            " FROM pg_constraint c WHERE c.contype = 'f'"
            " AND c.conrelid = ANY(%s::regclass[])"
            " ORDER BY c.conname",
            (tables,),
        ).fetchall()
        for table, name, definition in fks:
            # Foreign keys between the copied tables point at the copies;
            # the others (holds) keep pointing at the ledger's tables.
            for copied in FLOOR_TABLES:
                definition = definition.replace(f"ledger.{copied}(", f"floor.{copied}(")
            target = table.replace("ledger.", "floor.", 1)
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.SQL(target), sql.Identifier(name), sql.SQL(definition)
                )
            )
            added.append(f"{target}: {definition}")
        conn.execute(
            "INSERT INTO floor.accounts (owner_id, balance)"
            " SELECT 'o' || g, %s FROM generate_series(1, %s) g",
            (FUNDING, OWNERS),
        )
        conn.execute(
            "INSERT INTO floor.accounts (owner_id, balance) VALUES ('hot', %s)",
            (FUNDING * HOT_FUNDING_CALLS,),
        )
        conn.execute(
            "INSERT INTO floor.grants (owner_id, entry_id, seq, app, operation, amount, remaining,"
            " priority, expires_at, created_at)"
            " SELECT owner_id, NULL, 0, 'bench', 'CREDIT_ADD', %(funding)s, %(funding)s, 50, NULL,"
            " clock_timestamp()"
            " FROM (SELECT 'o' || g AS owner_id FROM generate_series(1, %(owners)s) g"
            "       UNION ALL SELECT 'hot' FROM generate_series(1, %(hot)s)) o",
            {"funding": FUNDING, "owners": OWNERS, "hot": HOT_FUNDING_CALLS},
        )
        conn.execute(FLOOR_FUNCTION)
        conn.execute("CREATE TABLE bench_counter (id integer PRIMARY KEY, v bigint NOT NULL)")
        conn.execute("INSERT INTO bench_counter VALUES (1, 0)")
        conn.execute(
            "VACUUM ANALYZE floor.accounts, floor.entries, floor.grants, floor.grant_spending,"
            " floor.events, bench_counter"
        )
    return added


def prepare_pgbench(target: pgbench.Target, scale: int) -> None:
    pgbench.initialize(target, scale)


def bulk_load_history(url: str, rows: int) -> dict[str, Any]:
    """Append `rows` entries spread over o1..o10000 (CREDIT_ADD of 1 each),
    with running balances, keys and timestamps, and raise the accounts to
    match: ledger.verify() stays clean. Run as the superuser with the
    foreign-key triggers off (session_replication_role): setup, not the
    measurement."""
    per_owner = rows // OWNERS
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '512MB'")
        with conn.transaction():
            conn.execute(
                """
                INSERT INTO ledger.entries
                    (owner_id, seq, app, operation, amount, balance, idempotency_key, fingerprint,
                     metadata, created_at, created_by)
                SELECT a.owner_id, a.last_seq + (s - 1) / %(owners)s + 1, 'bench', 'CREDIT_ADD', 1,
                       a.balance + (s - 1) / %(owners)s + 1,
                       'bulk-' || s, md5('bulk-' || s)::uuid, '{}',
                       now() - (%(rows)s - s) * interval '1 microsecond', 'bench'
                FROM generate_series(1, %(rows)s) s
                JOIN ledger.accounts a ON a.owner_id = 'o' || ((s - 1) %% %(owners)s + 1)
                """,
                {"rows": per_owner * OWNERS, "owners": OWNERS},
            )
            conn.execute(
                "UPDATE ledger.accounts SET balance = balance + %s, last_seq = last_seq + %s,"
                " updated_at = now() WHERE owner_id ~ '^o[0-9]+$'",
                (per_owner, per_owner),
            )
        conn.execute("RESET session_replication_role")
        conn.execute("VACUUM ANALYZE ledger.entries, ledger.accounts")
        conn.execute("CHECKPOINT")
        row = conn.execute(
            "SELECT count(*), max(entry_id), pg_total_relation_size('ledger.entries')"
            " FROM ledger.entries"
        ).fetchone()
    assert row is not None
    return {"entries": row[0], "max_entry_id": row[1], "table_and_indexes_mb": row[2] // 2**20}
