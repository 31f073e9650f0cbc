"""reverse_entry: the compensating REVERSAL entry, once, by the writing app, never overdrawing."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from .helpers import balance, call, counts, one, post


def reverse(
    conn: psycopg.Connection[Any],
    entry_id: Any,
    key: str,
    app: str = "core",
    reason: str | None = None,
) -> list[dict[str, Any]]:
    return call(
        conn, "reverse_entry", entry_id=entry_id, app=app, idempotency_key=key, reason=reason
    )


def fails(
    conn: psycopg.Connection[Any],
    sqlstate: str,
    entry_id: Any,
    key: str = "rev-bad",
    app: str = "core",
    reason: str | None = None,
) -> psycopg.Error:
    before = counts(conn)
    with pytest.raises(psycopg.Error) as info:
        reverse(conn, entry_id, key, app, reason)
    assert info.value.sqlstate == sqlstate, (
        entry_id,
        key,
        app,
        info.value.sqlstate,
        str(info.value),
    )
    assert counts(conn) == before
    return info.value


def test_reversing_a_credit_and_a_debit(conn):
    credit = post(conn, "ann", "CREDIT_ADD", "c1", amount=10)
    debit = post(conn, "ann", "CREDIT_SPEND", "d1", amount=4)
    [undo_debit] = reverse(conn, debit["entry_id"], "r1", reason="refund")
    assert (
        undo_debit["operation"],
        undo_debit["amount"],
        undo_debit["balance"],
        undo_debit["replayed"],
    ) == ("REVERSAL", 4, 10, False)
    stored = one(conn, "get_entry", entry_id=undo_debit["entry_id"])
    assert stored["reverses_entry_id"] == debit["entry_id"]
    assert stored["metadata"] == {"reverses_entry_id": debit["entry_id"], "reason": "refund"}
    assert stored["idempotency_key"] == "r1"
    [undo_credit] = reverse(conn, credit["entry_id"], "r2")
    assert (undo_credit["amount"], undo_credit["balance"]) == (-10, 0)
    assert one(conn, "get_entry", entry_id=undo_credit["entry_id"])["metadata"] == {
        "reverses_entry_id": credit["entry_id"]
    }
    assert balance(conn, "ann") == 0
    assert call(conn, "verify") == []


def test_reversing_either_leg_reverses_the_whole_transfer(conn):
    post(conn, "ann", "CREDIT_ADD", "c1", amount=10)
    moved = one(
        conn,
        "transfer",
        from_owner="ann",
        to_owner="bob",
        amount=6,
        app="core",
        idempotency_key="t1",
    )
    rows = reverse(conn, moved["to_entry_id"], "r1")
    assert [(r["owner_id"], r["amount"], r["balance"]) for r in rows] == [
        ("ann", 6, 10),
        ("bob", -6, 0),
    ]
    reversed_ids = {
        e
        for (e,) in conn.execute(
            "SELECT reverses_entry_id FROM ledger.entries WHERE reverses_entry_id IS NOT NULL"
        )
    }
    assert reversed_ids == {moved["from_entry_id"], moved["to_entry_id"]}
    assert (
        conn.execute("SELECT count(*) FROM ledger.entries WHERE idempotency_key = 'r1'").fetchone()[
            0
        ]
        == 1
    )
    # a replay returns both rows again
    assert reverse(conn, moved["to_entry_id"], "r1") == [{**r, "replayed": True} for r in rows]
    # the other leg is reversed already
    fails(conn, "LG010", moved["from_entry_id"], "r2")
    assert call(conn, "verify") == []


def test_an_entry_is_reversed_once(conn):
    credit = post(conn, "cy", "CREDIT_ADD", "c1", amount=10)
    [first] = reverse(conn, credit["entry_id"], "r1")
    assert reverse(conn, credit["entry_id"], "r1") == [{**first, "replayed": True}]
    error = fails(conn, "LG010", credit["entry_id"], "r2")
    assert json.loads(error.diag.message_detail or "{}") == {"entry_id": credit["entry_id"]}
    fails(conn, "LG005", credit["entry_id"], "r1", reason="another request")
    fails(conn, "LG007", first["entry_id"], "r3")  # a reversal is not reversed


def test_reversal_errors(conn):
    credit = post(conn, "dee", "CREDIT_ADD", "c1", amount=10)
    access = post(conn, "dee", "CONTENT_ACCESS", "a1", app="example_app")
    fails(conn, "LG003", credit["entry_id"], app="example_app")  # only the writing app
    fails(conn, "LG003", access["entry_id"], app="core")
    fails(conn, "LG008", credit["entry_id"] + 1000)
    fails(conn, "LG007", None)
    fails(conn, "LG007", credit["entry_id"], key="")
    fails(conn, "LG011", credit["entry_id"], app="no_app")
    fails(conn, "LG007", credit["entry_id"], reason="x" * 1001)
    fails(conn, "LG005", credit["entry_id"], key="c1")  # a post_entry's key
    one(
        conn,
        "create_hold",
        owner_id="dee",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h1",
        amount=1,
    )
    fails(conn, "LG005", credit["entry_id"], key="h1")  # a hold's key
    assert reverse(conn, access["entry_id"], "r-ok", app="example_app")[0]["amount"] == 1


def test_reversing_spent_or_held_credits_is_insufficient(conn):
    credit = post(conn, "eve", "CREDIT_ADD", "c1", amount=10)
    post(conn, "eve", "CREDIT_SPEND", "d1", amount=3)
    error = fails(conn, "LG001", credit["entry_id"])
    assert json.loads(error.diag.message_detail or "{}") == {
        "owner_id": "eve",
        "needed": 10,
        "available": 7,
    }
    assert balance(conn, "eve") == 7
    post(conn, "eve", "CREDIT_ADD", "c2", amount=5)
    one(
        conn,
        "create_hold",
        owner_id="eve",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h1",
        amount=3,
    )
    fails(conn, "LG001", credit["entry_id"])  # 12 balance, 3 held: 9 available
    # a transfer whose receiver spent the credits cannot be reversed
    moved = one(
        conn,
        "transfer",
        from_owner="eve",
        to_owner="fay",
        amount=4,
        app="core",
        idempotency_key="t1",
    )
    post(conn, "fay", "CREDIT_SPEND", "d2", amount=2)
    fails(conn, "LG001", moved["from_entry_id"])
    assert conn.execute("SELECT min(balance) FROM ledger.entries").fetchone()[0] >= 0
    assert call(conn, "verify") == []


def test_concurrent_reversals_of_one_entry_one_wins(db_url, conn):
    credit = post(conn, "gil", "CREDIT_ADD", "c1", amount=10)
    barrier = threading.Barrier(6)

    def work(index: int) -> str:
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute("SET lock_timeout = '20s'")
            barrier.wait()
            try:
                reverse(c, credit["entry_id"], f"r{index}")
                return "ok"
            except psycopg.Error as exc:
                return exc.sqlstate or "?"

    with ThreadPoolExecutor(6) as pool:
        outcomes = sorted(pool.map(work, range(6)))
    assert outcomes == ["LG010"] * 5 + ["ok"]
    assert balance(conn, "gil") == 0
    assert call(conn, "verify") == []


def test_roles(conn):
    credit = post(conn, "hal", "CREDIT_ADD", "c1", amount=10)
    conn.execute("SET ROLE ledger_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reverse(conn, credit["entry_id"], "r1")
    conn.execute("SET ROLE ledger_app")
    assert reverse(conn, credit["entry_id"], "r1")[0]["amount"] == -10
    conn.execute("RESET ROLE")
