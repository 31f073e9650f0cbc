"""The ledger's invariants, checked after every reliability run.

Each check reads the tables directly (as a superuser) and compares them with
what the ledger's own functions report, so a bug in one cannot hide a bug in
the other.
"""

from __future__ import annotations

from typing import Any

import psycopg


def ledger_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """Every broken invariant, as readable lines; empty means healthy."""
    problems: list[str] = []
    for check, owner, detail in conn.execute("SELECT * FROM ledger.verify()").fetchall():
        problems.append(f"verify: {check} {owner}: {detail}")
    for owner, balance in conn.execute(
        "SELECT owner_id, balance FROM ledger.accounts WHERE balance < 0"
    ).fetchall():
        problems.append(f"negative balance {owner}: {balance}")
    for owner, balance, total in conn.execute(
        "SELECT a.owner_id, a.balance, coalesce(sum(e.amount), 0) FROM ledger.accounts a"
        " LEFT JOIN ledger.entries e USING (owner_id) GROUP BY a.owner_id, a.balance"
        " HAVING a.balance <> coalesce(sum(e.amount), 0)"
    ).fetchall():
        problems.append(f"balance {owner}: stored {balance}, sum of entries {total}")
    for owner, balance, held, available, active in conn.execute(
        "SELECT a.owner_id, b.balance, b.held, b.available,"
        "       (SELECT coalesce(sum(h.amount), 0) FROM ledger.holds h"
        "        WHERE h.owner_id = a.owner_id AND h.status = 'active'"
        "          AND h.expires_at > clock_timestamp())"
        " FROM ledger.accounts a CROSS JOIN LATERAL ledger.get_balance(a.owner_id) b"
    ).fetchall():
        # available never shows below 0 (expired or voided grants can leave a hold uncovered)
        if held != active or available != max(balance - active, 0):
            problems.append(
                f"available {owner}: balance {balance}, held {held}, available {available},"
                f" active holds {active}"
            )
    # A key belongs to (owner, app).
    for key, app, owner, count in conn.execute(
        "SELECT idempotency_key, app, owner_id, count(*) FROM ledger.entries"
        " WHERE idempotency_key IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1"
    ).fetchall():
        problems.append(f"key {owner}/{app}/{key} used by {count} entries")
    return problems


def entries_by_operation(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(
        conn.execute("SELECT operation, count(*) FROM ledger.entries GROUP BY 1").fetchall()
    )
