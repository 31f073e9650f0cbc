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
