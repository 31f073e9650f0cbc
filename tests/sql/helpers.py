"""Small helpers for tests that call the SQL API through psycopg."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row


def call(conn: psycopg.Connection[Any], function: str, **params: Any) -> list[dict[str, Any]]:
    """SELECT * FROM ledger.<function>(name => value, ...) as a list of dicts."""
    args = ", ".join(f"{name} => %({name})s" for name in params)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM ledger.{function}({args})", params)
        return cur.fetchall()


def one(conn: psycopg.Connection[Any], function: str, **params: Any) -> dict[str, Any]:
    rows = call(conn, function, **params)
    assert len(rows) == 1, rows
    return rows[0]


def post(
    conn: psycopg.Connection[Any],
    owner_id: str,
    operation: str,
    key: str,
    amount: Any = None,
    app: str = "core",
    **extra: Any,
) -> dict[str, Any]:
    return one(
        conn,
        "post_entry",
        owner_id=owner_id,
        app=app,
        operation=operation,
        idempotency_key=key,
        amount=amount,
        **extra,
    )


def counts(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """(entries, accounts, holds): to prove that a failed call wrote nothing."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM ledger.entries), (SELECT count(*) FROM ledger.accounts),"
        " (SELECT count(*) FROM ledger.holds)"
    ).fetchone()
    assert row is not None
    return (row[0], row[1], row[2])


def balance(conn: psycopg.Connection[Any], owner_id: str) -> int:
    return int(one(conn, "get_balance", owner_id=owner_id)["balance"])


def lock_waits(conn: psycopg.Connection[Any], query_like: str | None = None) -> int:
    """Sessions of this database waiting for a lock (whose query is LIKE query_like).

    On Citus the waits are on the workers (a call delegated to a worker, a
    statement on a shard): citus_stat_activity sees every node's sessions.
    """
    citus = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone()
    view = "citus_stat_activity" if citus else "pg_stat_activity"
    row = conn.execute(
        f"SELECT count(*) FROM {view} WHERE wait_event_type = 'Lock'"
        " AND datname = current_database() AND (%(like)s::text IS NULL OR query LIKE %(like)s)",
        {"like": query_like},
    ).fetchone()
    assert row is not None
    return int(row[0])


# Citus 12.1 (function_call_delegation.c) hashes the distribution argument of a
# delegated call without checking for NULL: a call such as
# get_balance(owner_id => NULL) kills the coordinator's backend (signal 11)
# and PostgreSQL restarts every session. docs/CITUS.md, "A NULL owner".
NULL_OWNER_CRASHES_CITUS = "Citus 12.1 crashes on a NULL distribution argument (docs/CITUS.md)"


def skip_null_owner_on_citus(backend: str, owner_id: Any) -> None:
    if backend == "citus" and owner_id is None:
        import pytest

        pytest.skip(NULL_OWNER_CRASHES_CITUS)
