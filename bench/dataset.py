"""Setting up what the scenarios run against (setup, never measured): the
migrated ledger with funded owners, the `floor` copy of its tables, the
one-row table, pgbench's tables, and the 5,000,000-entry history."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench import pgbench
from bench.scripts import OWNERS
from ledger_py.migrate import migrate

FUNDING = 1_000_000  # credits of each uniform owner (the largest CREDIT_ADD)
HOT_FUNDING_CALLS = 20  # the hot owner gets 20 x 1,000,000: enough for any run


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
        conn.execute("VACUUM ANALYZE ledger.accounts, ledger.entries")


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


def prepare_floor(url: str) -> list[str]:
    """Schema `floor`: accounts and entries with the ledger's columns,
    defaults, identity, CHECK constraints and indexes (LIKE ... INCLUDING ALL)
    plus its foreign keys, read from the catalog so that a later migration is
    followed. The append-only triggers are left out: they fire on UPDATE and
    DELETE only, never on the insert path. Returns the foreign keys added."""
    added: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS floor CASCADE")
        conn.execute("CREATE SCHEMA floor")
        conn.execute("CREATE TABLE floor.accounts (LIKE ledger.accounts INCLUDING ALL)")
        conn.execute("CREATE TABLE floor.entries (LIKE ledger.entries INCLUDING ALL)")
        fks = conn.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
            " FROM pg_constraint c WHERE c.contype = 'f'"
            " AND c.conrelid IN ('ledger.accounts'::regclass, 'ledger.entries'::regclass)"
            " ORDER BY c.conname"
        ).fetchall()
        for table, name, definition in fks:
            # Foreign keys between the copied tables point at the copies;
            # the others (holds) keep pointing at the ledger's tables.
            definition = definition.replace("ledger.accounts(", "floor.accounts(")
            definition = definition.replace("ledger.entries(", "floor.entries(")
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
        conn.execute(FLOOR_FUNCTION)
        conn.execute("CREATE TABLE bench_counter (id integer PRIMARY KEY, v bigint NOT NULL)")
        conn.execute("INSERT INTO bench_counter VALUES (1, 0)")
        conn.execute("VACUUM ANALYZE floor.accounts, floor.entries, bench_counter")
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
