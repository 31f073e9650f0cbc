"""Transfers: two linked legs in one transaction, fixed lock order, no deadlock under load."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .helpers import balance, call, counts, one, post


def transfer(
    conn: psycopg.Connection[Any],
    source: str,
    target: str,
    amount: Any,
    key: str,
    app: str = "core",
    **extra: Any,
) -> dict[str, Any]:
    return one(
        conn,
        "transfer",
        from_owner=source,
        to_owner=target,
        amount=amount,
        app=app,
        idempotency_key=key,
        **extra,
    )


def fails(conn: psycopg.Connection[Any], sqlstate: str, **params: Any) -> psycopg.Error:
    base = {
        "from_owner": "ann",
        "to_owner": "bob",
        "amount": 5,
        "app": "core",
        "idempotency_key": "t-bad",
    }
    before = counts(conn)
    with pytest.raises(psycopg.Error) as info:
        call(conn, "transfer", **{**base, **params})
    assert info.value.sqlstate == sqlstate, (params, info.value.sqlstate, str(info.value))
    assert counts(conn) == before
    return info.value


@pytest.fixture
def funded(conn):
    post(conn, "ann", "CREDIT_ADD", "fund-ann", amount=30)
    return conn


def test_a_transfer_writes_two_linked_legs(funded):
    conn = funded
    result = transfer(conn, "ann", "bob", 12, "t1", metadata='{"note": "gift"}')
    assert (result["amount"], result["from_balance"], result["to_balance"], result["replayed"]) == (
        12,
        18,
        12,
        False,
    )
    with conn.cursor(row_factory=dict_row) as cur:
        legs = cur.execute(
            # the sending leg first (not by entry_id: on Citus each worker draws
            # ids from a range of its own)
            "SELECT * FROM ledger.entries WHERE transfer_id = %s ORDER BY amount",
            (result["transfer_id"],),
        ).fetchall()
    assert [
        (leg["entry_id"], leg["owner_id"], leg["operation"], leg["amount"], leg["balance"])
        for leg in legs
    ] == [
        (result["from_entry_id"], "ann", "TRANSFER_OUT", -12, 18),
        (result["to_entry_id"], "bob", "TRANSFER_IN", 12, 12),
    ]
    assert [leg["idempotency_key"] for leg in legs] == ["t1", None]
    assert [leg["metadata"] for leg in legs] == [{"note": "gift"}] * 2
    assert legs[0]["created_at"] <= legs[1]["created_at"]
    assert (balance(conn, "ann"), balance(conn, "bob")) == (18, 12)
    assert call(conn, "verify") == []


def test_transfer_replay_and_key_conflicts(funded):
    conn = funded
    first = transfer(conn, "ann", "bob", 5, "t1")
    assert transfer(conn, "ann", "bob", 5, "t1") == {**first, "replayed": True}
    assert transfer(conn, "ann", "bob", Decimal(5), "t1")["replayed"] is True
    assert balance(conn, "ann") == 25
    fails(conn, "LG005", idempotency_key="t1", amount=6)
    fails(conn, "LG005", idempotency_key="t1", to_owner="cy")
    fails(conn, "LG005", idempotency_key="fund-ann")  # a post_entry's key
    one(
        conn,
        "create_hold",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="held",
        amount=1,
    )
    fails(conn, "LG005", idempotency_key="held")  # a hold's key
    with pytest.raises(psycopg.Error) as info:
        post(conn, "ann", "CREDIT_ADD", "t1", amount=5)
    assert info.value.sqlstate == "LG005"


def test_transfer_errors(funded):
    conn = funded
    one(
        conn,
        "create_hold",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h",
        amount=20,
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"to_owner": "ann"}, "LG007"),
        ({"amount": 0}, "LG006"),
        ({"amount": -5}, "LG006"),
        ({"amount": Decimal("1.5")}, "LG006"),
        ({"amount": 10**30}, "LG006"),
        ({"amount": None}, "LG006"),
        ({"amount": 11}, "LG001"),  # 30 - 20 held = 10 available
        ({"from_owner": "nobody"}, "LG001"),
        ({"from_owner": ""}, "LG007"),
        ({"to_owner": None}, "LG007"),
        ({"to_owner": "x" * 256}, "LG007"),
        ({"idempotency_key": ""}, "LG007"),
        ({"app": "no_app"}, "LG011"),
        ({"app": None}, "LG007"),
        ({"metadata": "[1]"}, "LG007"),
        ({"metadata": "{oops"}, "LG007"),
        ({"metadata": '{"a": "\\u0000"}'}, "LG007"),
        ({"metadata": '{"n": 1e1000000}'}, "LG007"),  # beyond numeric: not a 22003
        ({"metadata": '{"a": ' + "[" * 32_000 + "]" * 32_000 + "}"}, "LG007"),  # not a 54001
    ]
    for params, sqlstate in cases:
        fails(conn, sqlstate, **params)
    detail = json.loads(fails(conn, "LG001", amount=11).diag.message_detail)
    assert (detail["needed"], detail["available"]) == (11, 10)
    assert conn.execute("SELECT count(*) FROM ledger.accounts").fetchone()[0] == 1
    assert transfer(conn, "ann", "bob", 10, "exact")["from_balance"] == 20


def test_jsonb_metadata_overload(funded):
    conn = funded
    rows = conn.execute(
        "SELECT * FROM ledger.transfer(metadata => %s, from_owner => 'ann', to_owner => 'bob',"
        " amount => 3,"
        " app => 'example_app', idempotency_key => 'j1')",
        (Jsonb({"k": 1}),),
    ).fetchall()
    assert rows[0][3] == 3
    assert conn.execute(
        "SELECT DISTINCT app FROM ledger.entries WHERE transfer_id IS NOT NULL"
    ).fetchall() == [("example_app",)]


def test_transfers_in_both_directions_from_eight_threads(db_url, conn):
    owners = [f"p{i}" for i in range(5)]
    for owner in owners:
        post(conn, owner, "CREDIT_ADD", f"fund-{owner}", amount=200)
    start_total = conn.execute("SELECT sum(balance) FROM ledger.accounts").fetchone()[0]
    threads, per_thread = 8, 250
    barrier = threading.Barrier(threads)

    def work(index: int) -> Counter[str]:
        rng = random.Random(index)
        outcomes: Counter[str] = Counter()
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute("SET lock_timeout = '20s'")
            barrier.wait()
            for i in range(per_thread):
                source, target = rng.sample(owners, 2)
                try:
                    transfer(c, source, target, rng.randint(1, 60), f"x{index}-{i}")
                    outcomes["ok"] += 1
                except psycopg.Error as exc:
                    outcomes[exc.sqlstate or "?"] += 1
        return outcomes

    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(work, range(threads)), Counter())
    assert sum(total.values()) == threads * per_thread
    assert set(total) <= {"ok", "LG001"}, total  # no deadlock (40P01), no lock timeout
    assert total["ok"] > threads * per_thread // 2
    assert conn.execute("SELECT sum(balance) FROM ledger.accounts").fetchone()[0] == start_total
    legs = conn.execute(
        "SELECT count(*), count(DISTINCT transfer_id) FROM ledger.entries"
        " WHERE transfer_id IS NOT NULL"
    ).fetchone()
    assert legs == (2 * total["ok"], total["ok"])
    assert conn.execute("SELECT min(balance) FROM ledger.entries").fetchone()[0] >= 0
    assert call(conn, "verify") == []


def test_roles(funded):
    conn = funded
    conn.execute("SET ROLE ledger_app")
    transfer(conn, "ann", "bob", 1, "role-1")
    conn.execute("SET ROLE ledger_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        transfer(conn, "ann", "bob", 1, "role-2")
    conn.execute("RESET ROLE")
    assert conn.execute(
        "SELECT DISTINCT created_by FROM ledger.entries WHERE transfer_id IS NOT NULL"
    ).fetchall() == [("ledger_app",)]
