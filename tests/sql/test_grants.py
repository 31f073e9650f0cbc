"""Credit grants: spending order, expiry, voids, reversals, transfers, batches.

Runs on plain PostgreSQL and on the Citus cluster (tests/conftest.py,
CITUS_CONTRACT). Expiry is real time: a grant made to expire two seconds from
now, and a short sleep past it; the boundary itself is read with
balance_at, which takes any instant.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from .helpers import balance, call, counts, one, post

THREADS = 8


def _now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def grant(
    conn: psycopg.Connection[Any],
    owner: str,
    key: str,
    amount: int,
    *,
    operation: str = "CREDIT_ADD",
    expires_at: datetime | None = None,
    priority: int | None = None,
    app: str = "core",
) -> dict[str, Any]:
    return one(
        conn,
        "grant_credits",
        owner_id=owner,
        app=app,
        operation=operation,
        idempotency_key=key,
        amount=amount,
        expires_at=expires_at,
        priority=priority,
    )


def grants(conn: psycopg.Connection[Any], owner: str, closed: bool = False) -> list[dict[str, Any]]:
    return call(conn, "list_grants", owner_id=owner, include_closed=closed)


def grant_of(conn: psycopg.Connection[Any], entry_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT grant_id, remaining, status, expires_at, priority FROM ledger.grants WHERE entry_id = %s",
        (entry_id,),
    ).fetchone()
    assert row is not None
    return dict(
        zip(("grant_id", "remaining", "status", "expires_at", "priority"), row, strict=True)
    )


def spent_by(conn: psycopg.Connection[Any], owner: str, entry_id: int) -> dict[int, int]:
    rows = call(conn, "list_spending", owner_id=owner, entry_id=entry_id)
    return {r["grant_id"]: r["amount"] for r in rows}


def _sleep_until(conn: psycopg.Connection[Any], instant: datetime) -> None:
    wait = (instant - _now(conn)).total_seconds()
    if wait > 0:
        time.sleep(wait + 0.05)


def test_spending_order_priority_then_soonest_expiry_then_oldest(conn):
    now = _now(conn)
    plain_old = grant(conn, "ann", "plain-old", 5)  # priority 50, never expires
    late = grant(conn, "ann", "late", 5, expires_at=now + timedelta(days=9))
    soon = grant(conn, "ann", "soon", 5, expires_at=now + timedelta(days=2))
    plain_new = grant(conn, "ann", "plain-new", 5)
    promo = grant(conn, "ann", "promo", 5, operation="PROMO_CREDIT")  # priority 10, 30 days
    urgent = grant(conn, "ann", "urgent", 5, priority=0)
    order = [g["entry_id"] for g in grants(conn, "ann")]
    assert order == [
        urgent["entry_id"],
        promo["entry_id"],
        soon["entry_id"],
        late["entry_id"],
        plain_old["entry_id"],
        plain_new["entry_id"],
    ]
    # One debit across four grants, in that order.
    debit = post(conn, "ann", "CREDIT_SPEND", "spend", amount=17)
    ids = {
        name: grant_of(conn, e["entry_id"])["grant_id"]
        for name, e in {
            "urgent": urgent,
            "promo": promo,
            "soon": soon,
            "late": late,
            "plain_old": plain_old,
        }.items()
    }
    assert spent_by(conn, "ann", debit["entry_id"]) == {
        ids["urgent"]: -5,
        ids["promo"]: -5,
        ids["soon"]: -5,
        ids["late"]: -2,
    }
    left = {g["entry_id"]: g["remaining"] for g in grants(conn, "ann")}
    assert left == {late["entry_id"]: 3, plain_old["entry_id"]: 5, plain_new["entry_id"]: 5}
    closed = grants(conn, "ann", closed=True)
    assert [g["status"] for g in closed[3:]] == ["spent", "spent", "spent"]
    assert balance(conn, "ann") == 13
    assert call(conn, "verify") == []


def test_promo_credit_is_registered_with_its_expiry_and_priority(conn):
    row = conn.execute(
        "SELECT direction, caller_sets_amount, min_amount, max_amount, expires_after, grant_priority"
        " FROM ledger.operations WHERE operation = 'PROMO_CREDIT'"
    ).fetchone()
    assert row == ("credit", True, 1, 1_000_000, timedelta(days=30), 10)
    made = post(conn, "pia", "PROMO_CREDIT", "p1", amount=20)
    g = grant_of(conn, made["entry_id"])
    assert g["priority"] == 10
    assert g["expires_at"] - made["created_at"] == timedelta(days=30)


def test_operation_expiry_and_priority_from_define_operation(conn):
    one(
        conn,
        "define_operation",
        app="core",
        operation="WEEKLY_ALLOWANCE",
        direction="credit",
        default_amount=7,
        expires_after=timedelta(days=7),
        grant_priority=20,
    )
    made = post(conn, "wes", "WEEKLY_ALLOWANCE", "w1")
    g = grant_of(conn, made["entry_id"])
    assert (g["priority"], g["expires_at"] - made["created_at"]) == (20, timedelta(days=7))
    for bad in (
        {"expires_after": timedelta(0)},
        {"grant_priority": 1001},
        {"direction": "debit", "expires_after": timedelta(days=1)},
    ):
        params = {
            "app": "core",
            "operation": "BAD_ONE",
            "direction": "credit",
            "default_amount": 1,
            **bad,
        }
        with pytest.raises(psycopg.Error) as err:
            call(conn, "define_operation", **params)
        assert err.value.sqlstate == "LG007"
        assert json.loads(err.value.diag.message_detail)["field"] in {
            "expires_after",
            "grant_priority",
        }


def test_grant_credits_input_rules(conn):
    now = _now(conn)
    before = counts(conn)
    cases = [
        ({"expires_at": now - timedelta(seconds=1)}, "expires_at"),
        ({"operation": "PROMO_CREDIT", "expires_at": now + timedelta(days=31)}, "expires_at"),
        ({"priority": -1}, "priority"),
        ({"priority": 1001}, "priority"),
        ({"operation": "CREDIT_SPEND"}, "operation"),
    ]
    for extra, field in cases:
        params = {
            "owner_id": "gus",
            "app": "core",
            "operation": "CREDIT_ADD",
            "idempotency_key": "g",
            "amount": 5,
            **extra,
        }
        with pytest.raises(psycopg.Error) as err:
            call(conn, "grant_credits", **params)
        assert err.value.sqlstate == "LG007", extra
        assert json.loads(err.value.diag.message_detail)["field"] == field
    assert counts(conn) == before
    # A caller may shorten an operation's expiry, and a replay is a replay.
    short = grant(conn, "gus", "g", 5, operation="PROMO_CREDIT", expires_at=now + timedelta(days=1))
    again = grant(conn, "gus", "g", 5, operation="PROMO_CREDIT", expires_at=now + timedelta(days=1))
    assert again["replayed"] and again["entry_id"] == short["entry_id"]
    with pytest.raises(psycopg.Error) as err:
        grant(conn, "gus", "g", 5, operation="PROMO_CREDIT", expires_at=now + timedelta(days=2))
    assert err.value.sqlstate == "LG005"


def test_expiry_boundary_usable_strictly_before_expires_at(conn):
    post(conn, "bo", "CREDIT_ADD", "base", amount=3)
    expires = _now(conn) + timedelta(seconds=2)
    made = grant(conn, "bo", "short", 10, expires_at=expires)
    assert balance(conn, "bo") == 13
    assert (
        one(conn, "balance_at", owner_id="bo", at=expires - timedelta(microseconds=1))["balance_at"]
        == 13
    )
    # At expires_at itself the credits are gone, before any EXPIRE entry exists.
    assert one(conn, "balance_at", owner_id="bo", at=expires)["balance_at"] == 3
    _sleep_until(conn, expires)
    entries_before = counts(conn)[0]
    assert balance(conn, "bo") == 3
    assert one(conn, "get_balance", owner_id="bo")["available"] == 3
    assert [g["entry_id"] for g in grants(conn, "bo")] == [
        e["entry_id"]
        for e in call(conn, "list_entries", owner_id="bo")
        if e["operation"] == "CREDIT_ADD" and e["idempotency_key"] == "base"
    ]
    closed = {g["entry_id"]: g for g in grants(conn, "bo", closed=True)}
    assert (closed[made["entry_id"]]["status"], closed[made["entry_id"]]["remaining"]) == (
        "expired",
        0,
    )
    assert counts(conn)[0] == entries_before  # reads wrote nothing
    # No debit can use them; the refused debit wrote nothing, its EXPIRE included.
    with pytest.raises(psycopg.Error) as err:
        post(conn, "bo", "CREDIT_SPEND", "too-much", amount=4)
    assert err.value.sqlstate == "LG001"
    assert json.loads(err.value.diag.message_detail)["available"] == 3
    assert counts(conn)[0] == entries_before
    # The owner's next write records the expiry, under its lock.
    spent = post(conn, "bo", "CREDIT_SPEND", "ok", amount=1)
    history = call(conn, "list_entries", owner_id="bo")
    assert [(e["operation"], e["amount"]) for e in history[:2]] == [
        ("CREDIT_SPEND", -1),
        ("EXPIRE", -10),
    ]
    expire = history[1]
    assert (
        expire["app"] == "core"
        and expire["metadata"]["grant_id"] == grant_of(conn, made["entry_id"])["grant_id"]
    )
    assert spent["balance"] == 2
    assert balance(conn, "bo") == 2
    assert call(conn, "verify") == []


def test_a_hold_reserves_an_amount_not_grants(conn):
    expires = _now(conn) + timedelta(seconds=2)
    grant(conn, "hal", "exp", 10, expires_at=expires)
    post(conn, "hal", "CREDIT_ADD", "keep", amount=2)
    hold = one(
        conn,
        "create_hold",
        owner_id="hal",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h",
        amount=6,
    )
    assert one(conn, "get_balance", owner_id="hal")["available"] == 6
    _sleep_until(conn, expires)
    now_balance = one(conn, "get_balance", owner_id="hal")
    assert (now_balance["balance"], now_balance["held"], now_balance["available"]) == (2, 6, 0)
    before = counts(conn)
    with pytest.raises(psycopg.Error) as err:
        call(conn, "capture_hold", hold_id=hold["hold_id"], app="core")
    assert err.value.sqlstate == "LG001"
    assert counts(conn) == before
    assert one(conn, "get_hold", hold_id=hold["hold_id"])["status"] == "active"
    # A smaller capture that the credits left cover still works.
    captured = one(conn, "capture_hold", hold_id=hold["hold_id"], app="core", amount=2)
    assert captured["balance"] == 0
    assert call(conn, "verify") == []


def test_void_grant(conn):
    made = grant(conn, "vi", "v1", 10, operation="PROMO_CREDIT")
    post(conn, "vi", "CREDIT_ADD", "other", amount=5)
    post(conn, "vi", "CREDIT_SPEND", "spend", amount=4)  # promo first (priority 10)
    g = grant_of(conn, made["entry_id"])
    one(conn, "define_app", app="other_app")
    with pytest.raises(psycopg.Error) as err:
        call(conn, "void_grant", grant_id=g["grant_id"], app="other_app", idempotency_key="x")
    assert err.value.sqlstate == "LG003"
    with pytest.raises(psycopg.Error) as err:
        call(conn, "void_grant", grant_id=g["grant_id"] + 1000, app="core", idempotency_key="x")
    assert err.value.sqlstate == "LG008"
    voided = one(
        conn,
        "void_grant",
        grant_id=g["grant_id"],
        app="core",
        idempotency_key="void-1",
        reason="promo withdrawn",
    )
    assert (voided["operation"], voided["amount"], voided["balance"]) == ("VOID", -6, 5)
    replay = one(
        conn,
        "void_grant",
        grant_id=g["grant_id"],
        app="core",
        idempotency_key="void-1",
        reason="promo withdrawn",
    )
    assert replay["replayed"] and replay["entry_id"] == voided["entry_id"]
    with pytest.raises(psycopg.Error) as err:
        call(
            conn,
            "void_grant",
            grant_id=g["grant_id"],
            app="core",
            idempotency_key="void-2",
            owner_id="vi",
        )
    assert err.value.sqlstate == "LG014"
    assert json.loads(err.value.diag.message_detail)["status"] == "voided"
    closed = {x["grant_id"]: x for x in grants(conn, "vi", closed=True)}
    assert (closed[g["grant_id"]]["status"], closed[g["grant_id"]]["remaining"]) == ("voided", 0)
    assert spent_by(conn, "vi", voided["entry_id"]) == {g["grant_id"]: -6}
    assert balance(conn, "vi") == 5
    assert call(conn, "verify") == []


def test_reversal_gives_back_to_the_grants_it_spent_and_re_expires(conn):
    expires = _now(conn) + timedelta(seconds=2)
    exp = grant(conn, "rey", "exp", 5, expires_at=expires)
    keep = post(conn, "rey", "CREDIT_ADD", "keep", amount=5)
    debit = post(conn, "rey", "CREDIT_SPEND", "d", amount=7)  # 5 of exp, 2 of keep
    exp_id = grant_of(conn, exp["entry_id"])["grant_id"]
    keep_id = grant_of(conn, keep["entry_id"])["grant_id"]
    assert spent_by(conn, "rey", debit["entry_id"]) == {exp_id: -5, keep_id: -2}
    _sleep_until(conn, expires)
    rows = call(conn, "reverse_entry", entry_id=debit["entry_id"], app="core", idempotency_key="r")
    assert [(r["operation"], r["amount"]) for r in rows] == [("REVERSAL", 7)]
    history = call(conn, "list_entries", owner_id="rey")
    # The 5 credits given back to the expired grant leave again at once.
    assert [(e["operation"], e["amount"]) for e in history[:2]] == [("EXPIRE", -5), ("REVERSAL", 7)]
    assert balance(conn, "rey") == 5
    assert {g["grant_id"]: g["remaining"] for g in grants(conn, "rey")} == {keep_id: 5}
    assert call(conn, "verify") == []


def test_reversing_a_credit_takes_back_its_grant_only_while_untouched(conn):
    first = post(conn, "rex", "CREDIT_ADD", "c1", amount=10)
    second = post(conn, "rex", "CREDIT_ADD", "c2", amount=10)
    post(conn, "rex", "CREDIT_SPEND", "d", amount=3)  # from the first (oldest)
    before = counts(conn)
    with pytest.raises(psycopg.Error) as err:
        call(conn, "reverse_entry", entry_id=first["entry_id"], app="core", idempotency_key="r1")
    assert err.value.sqlstate == "LG001"
    assert json.loads(err.value.diag.message_detail)["available"] == 7
    assert counts(conn) == before
    rows = call(
        conn, "reverse_entry", entry_id=second["entry_id"], app="core", idempotency_key="r2"
    )
    assert rows[0]["amount"] == -10
    closed = {g["entry_id"]: g["status"] for g in grants(conn, "rex", closed=True)}
    assert closed[second["entry_id"]] == "voided"
    assert balance(conn, "rex") == 7
    assert call(conn, "verify") == []


def test_transfer_keeps_expiry_and_priority_and_its_reversal_restores_both(conn):
    now = _now(conn)
    soon = now + timedelta(days=3)
    grant(conn, "tom", "promo", 4, operation="PROMO_CREDIT", expires_at=soon)  # priority 10
    grant(conn, "tom", "plain", 10)
    moved = one(
        conn,
        "transfer",
        from_owner="tom",
        to_owner="una",
        amount=6,
        app="core",
        idempotency_key="t",
    )
    received = sorted((g["amount"], g["priority"], g["expires_at"]) for g in grants(conn, "una"))
    assert received == [(2, 50, None), (4, 10, soon)]
    assert all(g["operation"] == "TRANSFER_IN" for g in grants(conn, "una"))
    rows = call(
        conn, "reverse_entry", entry_id=moved["from_entry_id"], app="core", idempotency_key="tr"
    )
    assert sorted(r["amount"] for r in rows) == [-6, 6]
    assert grants(conn, "una") == []
    tom = sorted((g["remaining"], g["priority"], g["expires_at"]) for g in grants(conn, "tom"))
    assert tom == [(4, 10, soon), (10, 50, None)]
    assert call(conn, "verify") == []


def test_a_batch_of_1000_debits_over_50_grants(conn):
    now = _now(conn)
    items = [
        {
            "owner_id": "bat",
            "app": "core",
            "operation": "CREDIT_ADD",
            "idempotency_key": f"c{i}",
            "amount": 40,
        }
        for i in range(50)
    ]
    call(conn, "post_entries", entries=json.dumps(items))
    for i in range(0, 50, 5):  # some expiring, some with a priority
        grant(conn, "bat", f"e{i}", 10, expires_at=now + timedelta(days=1 + i), priority=i)
    total = 50 * 40 + 10 * 10
    debits = [
        {
            "owner_id": "bat",
            "app": "core",
            "operation": "CREDIT_SPEND",
            "idempotency_key": f"d{i}",
            "amount": 2,
        }
        for i in range(1000)
    ]
    rows = call(conn, "post_entries", entries=json.dumps(debits))
    assert [r["balance"] for r in rows] == [total - 2 * (i + 1) for i in range(1000)]
    assert balance(conn, "bat") == 100
    # Every expiring grant (spent first) and the oldest plain ones are gone.
    assert sorted(g["remaining"] for g in grants(conn, "bat")) == [20, 40, 40]
    spent = conn.execute(
        "SELECT count(DISTINCT entry_id), sum(amount) FROM ledger.grant_spending WHERE owner_id = 'bat'"
    ).fetchone()
    assert spent == (1000, -2000)
    assert call(conn, "verify") == []


def test_a_batch_item_spends_only_grants_made_before_it(conn):
    post(conn, "bea", "CREDIT_ADD", "base", amount=5)
    items = [
        {
            "owner_id": "bea",
            "app": "core",
            "operation": "CREDIT_SPEND",
            "idempotency_key": "d1",
            "amount": 3,
        },
        {
            "owner_id": "bea",
            "app": "core",
            "operation": "PROMO_CREDIT",
            "idempotency_key": "p",
            "amount": 9,
        },
        {
            "owner_id": "bea",
            "app": "core",
            "operation": "CREDIT_SPEND",
            "idempotency_key": "d2",
            "amount": 4,
        },
    ]
    rows = call(conn, "post_entries", entries=json.dumps(items))
    base = grants(conn, "bea", closed=True)
    by_op = {g["operation"]: g for g in base}
    # d1 could only spend the base grant; d2 spends the promo (priority 10) first.
    assert spent_by(conn, "bea", rows[0]["entry_id"]) == {by_op["CREDIT_ADD"]["grant_id"]: -3}
    assert spent_by(conn, "bea", rows[2]["entry_id"]) == {by_op["PROMO_CREDIT"]["grant_id"]: -4}
    assert call(conn, "verify") == []


def test_expire_grants_sweeps_and_skips_a_locked_owner(db_url, conn):
    expires = _now(conn) + timedelta(seconds=2)
    for owner in ("sa", "sb", "sc"):
        grant(conn, owner, "x", 5, expires_at=expires)
        post(conn, owner, "CREDIT_ADD", "keep", amount=1)
    _sleep_until(conn, expires)
    with psycopg.connect(db_url) as holder:
        # sb is locked by an open write: the sweep passes it by without waiting.
        post(holder, "sb", "CREDIT_ADD", "busy", amount=1)
        started = time.monotonic()
        assert one(conn, "expire_grants", max_rows=100)["expire_grants"] == 2
        assert time.monotonic() - started < 5
        holder.rollback()
    assert one(conn, "expire_grants", max_rows=100)["expire_grants"] == 1
    assert one(conn, "expire_grants", max_rows=100)["expire_grants"] == 0
    for owner in ("sa", "sb", "sc"):
        assert next(e["operation"] for e in call(conn, "list_entries", owner_id=owner)) == "EXPIRE"
        assert balance(conn, owner) == 1
    assert call(conn, "verify") == []


def test_expire_grants_from_four_sessions_expires_each_grant_once(db_url, conn):
    items = []
    for i in range(40):
        items.append(
            {
                "owner_id": f"o{i}",
                "app": "core",
                "operation": "CREDIT_ADD",
                "idempotency_key": "k",
                "amount": 1,
            }
        )
    call(conn, "post_entries", entries=json.dumps(items))
    for i in range(40):
        for j in range(3):
            grant(conn, f"o{i}", f"g{j}", 2, expires_at=_now(conn) + timedelta(days=1))
    # Made due without waiting (writing 120 grants may take longer than any
    # short expiry on a loaded cluster): the expiry moved into the past, as a
    # day passing would, with the accounts' next_expiry following it.
    past = _now(conn) - timedelta(seconds=1)  # (Citus refuses clock_timestamp() in an UPDATE)
    conn.execute(
        "UPDATE ledger.grants SET expires_at = %s"
        " WHERE operation = 'CREDIT_ADD' AND expires_at IS NOT NULL",
        (past,),
    )
    conn.execute("UPDATE ledger.accounts SET next_expiry = %s WHERE owner_id LIKE 'o%%'", (past,))
    barrier = threading.Barrier(4)

    def sweep(_index: int) -> int:
        done = 0
        with psycopg.connect(db_url, autocommit=True) as c:
            barrier.wait()
            while True:
                n = one(c, "expire_grants", max_rows=7)["expire_grants"]
                if n == 0:
                    n = one(c, "expire_grants", max_rows=1000)["expire_grants"]
                    if n == 0:
                        return done
                done += n

    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(sweep, range(4)))
    assert total == 120
    assert conn.execute(
        "SELECT count(*), count(DISTINCT s.grant_id) FROM ledger.grant_spending s"
        " JOIN ledger.entries e ON e.owner_id = s.owner_id AND e.entry_id = s.entry_id"
        " WHERE e.operation = 'EXPIRE'"
    ).fetchone() == (120, 120)
    assert call(conn, "verify") == []


def test_expiry_racing_debits_spends_or_expires_never_both(db_url, conn):
    expires = _now(conn) + timedelta(seconds=2)
    made = grant(conn, "rac", "exp", 100_000, expires_at=expires)
    grant_id = grant_of(conn, made["entry_id"])["grant_id"]
    stop = expires + timedelta(milliseconds=300)
    barrier = threading.Barrier(THREADS)

    def work(index: int) -> Counter[str]:
        results: Counter[str] = Counter()
        with psycopg.connect(db_url, autocommit=True) as c:
            barrier.wait()
            i = 0
            while _now(c) < stop:
                try:
                    post(c, "rac", "CREDIT_SPEND", f"t{index}-{i}", amount=1)
                    results["ok"] += 1
                except psycopg.Error as exc:
                    results[exc.sqlstate or "?"] += 1
                i += 1
                if index == 0 and i % 20 == 0:
                    one(c, "expire_grants", max_rows=10)
        return results

    with ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(work, range(THREADS)), Counter())
    assert set(total) <= {"ok", "LG001"}
    one(conn, "expire_grants", max_rows=10)
    moves = conn.execute(
        "SELECT e.operation, sum(s.amount), max(e.created_at) FROM ledger.grant_spending s"
        " JOIN ledger.entries e ON e.owner_id = s.owner_id AND e.entry_id = s.entry_id"
        " WHERE s.owner_id = 'rac' AND s.grant_id = %s GROUP BY e.operation",
        (grant_id,),
    ).fetchall()
    by_op = {op: (amount, last) for op, amount, last in moves}
    spent = -by_op.get("CREDIT_SPEND", (0, None))[0]
    assert spent == total["ok"]
    assert spent + -by_op["EXPIRE"][0] == 100_000  # each credit spent or expired, never both
    if spent:
        assert by_op["CREDIT_SPEND"][1] < expires  # every spend strictly before the expiry
    assert balance(conn, "rac") == 0
    assert call(conn, "verify") == []


def test_app_report_counts_expired_and_voided_credits(conn):
    start = _now(conn)
    expires = start + timedelta(seconds=2)
    grant(conn, "rep", "e", 3, operation="PROMO_CREDIT", expires_at=expires)
    v = grant(conn, "rep", "v", 4, operation="PROMO_CREDIT")
    one(
        conn,
        "void_grant",
        grant_id=grant_of(conn, v["entry_id"])["grant_id"],
        app="core",
        idempotency_key="vv",
    )
    _sleep_until(conn, expires)
    assert one(conn, "expire_grants")["expire_grants"] == 1
    rows = {
        r["operation"]: r
        for r in call(
            conn,
            "app_report",
            app="core",
            from_time=start,
            to_time=_now(conn) + timedelta(seconds=1),
        )
    }
    assert (rows["PROMO_CREDIT"]["expired"], rows["PROMO_CREDIT"]["voided"]) == (3, 4)
    assert (rows["EXPIRE"]["debited"], rows["VOID"]["debited"]) == (3, 4)


def test_list_spending_answers_where_the_credits_went(conn):
    promo = post(conn, "wh", "PROMO_CREDIT", "p", amount=5)
    plain = post(conn, "wh", "CREDIT_ADD", "c", amount=5)
    debit = post(conn, "wh", "CREDIT_SPEND", "d", amount=7)
    rows = call(conn, "list_spending", owner_id="wh")
    assert [(r["entry_id"], r["operation"], r["amount"]) for r in rows] == [
        (debit["entry_id"], "CREDIT_SPEND", -5),
        (debit["entry_id"], "CREDIT_SPEND", -2),
    ]
    promo_grant = grant_of(conn, promo["entry_id"])["grant_id"]
    assert [
        r["amount"] for r in call(conn, "list_spending", owner_id="wh", grant_id=promo_grant)
    ] == [-5]
    assert grant_of(conn, plain["entry_id"])["remaining"] == 3
    with pytest.raises(psycopg.Error) as err:
        call(conn, "list_spending", owner_id="wh", max_rows=0)
    assert err.value.sqlstate == "LG007"


def test_a_grant_emptied_by_debits_is_stored_spent_and_a_reversal_reopens_it(conn):
    credit = post(conn, "sue", "CREDIT_ADD", "c", amount=10)
    gid = grant_of(conn, credit["entry_id"])["grant_id"]
    post(conn, "sue", "CREDIT_SPEND", "d1", amount=4)
    assert grant_of(conn, credit["entry_id"])["status"] == "active"
    last = post(conn, "sue", "CREDIT_SPEND", "d2", amount=6)
    row = conn.execute(
        "SELECT status, remaining, closed_at = %s FROM ledger.grants WHERE grant_id = %s",
        (last["created_at"], gid),
    ).fetchone()
    assert row == ("spent", 0, True)  # closed by the debit that emptied it
    assert grants(conn, "sue") == []
    # A reversal gives the credits back: the grant is active again, and spent first.
    call(conn, "reverse_entry", entry_id=last["entry_id"], app="core", idempotency_key="r")
    row = conn.execute(
        "SELECT status, remaining, closed_at FROM ledger.grants WHERE grant_id = %s", (gid,)
    ).fetchone()
    assert row == ("active", 6, None)
    debit = post(conn, "sue", "CREDIT_SPEND", "d3", amount=1)
    assert spent_by(conn, "sue", debit["entry_id"]) == {gid: -1}
    # Nothing may leave an active grant empty: the constraint says so.
    with pytest.raises(psycopg.errors.CheckViolation, match="grants_active_not_empty"):
        conn.execute("UPDATE ledger.grants SET remaining = 0 WHERE grant_id = %s", (gid,))
    assert call(conn, "verify") == []


@pytest.mark.plain_only("reads the server's per-transaction statistics of one table, not of shards")
def test_a_debit_that_leaves_credits_in_its_grant_is_a_hot_update(conn):
    # The spending-order index holds active grants, whatever they have left:
    # a debit that only lowers `remaining` adds no index entry (a HOT
    # update), so an owner debited again and again keeps one index entry.
    post(conn, "hot", "CREDIT_ADD", "c", amount=1000)
    with conn.transaction():
        for n in range(5):
            post(conn, "hot", "CREDIT_SPEND", f"d{n}", amount=1)
        hot, updated = conn.execute(
            "SELECT pg_stat_get_xact_tuples_hot_updated('ledger.grants'::regclass),"
            " pg_stat_get_xact_tuples_updated('ledger.grants'::regclass)"
        ).fetchone()
    assert updated == 5
    assert hot == 5
