"""Small helpers for tests that call the SQL API through psycopg."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
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


def login_member(conn: psycopg.Connection[Any], group: str) -> str:
    """A LOGIN role that is a member of `group` (ledger_app, ledger_reader,
    ledger_owner), made once per server: what a service or an operator logs
    in as. Tests SET ROLE to it rather than to the NOLOGIN group itself: on
    Citus the workers are reached as the current role, which must log in
    (roles are created on every node)."""
    role = f"ledger_test_{group}_login"
    conn.execute(
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN"
            " CREATE ROLE {role} LOGIN IN ROLE {group}; END IF; END $$"
        ).format(name=sql.Literal(role), role=sql.Identifier(role), group=sql.Identifier(group))
    )
    return role
