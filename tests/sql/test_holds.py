"""Holds: create, capture (whole or part), release, expiry by the clock alone, races."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from .helpers import call, counts, lock_waits, login_member, one, post


def hold(
    conn: psycopg.Connection[Any],
    owner: str,
    key: str,
    amount: Any = None,
    *,
    operation: str = "CREDIT_SPEND",
    app: str = "core",
    ttl: Any = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "owner_id": owner,
        "app": app,
        "operation": operation,
        "idempotency_key": key,
        "amount": amount,
    }
    if ttl is not None:
        params["ttl"] = ttl
    return one(conn, "create_hold", **params)


def available(conn: psycopg.Connection[Any], owner: str) -> tuple[int, int, int]:
    row = one(conn, "get_balance", owner_id=owner)
    return (row["balance"], row["held"], row["available"])


def fails(
    conn: psycopg.Connection[Any], sqlstate: str, function: str, **params: Any
) -> dict[str, Any]:
    """The call fails with sqlstate and writes nothing; returns the DETAIL object."""
    before = counts(conn)
    states = conn.execute("SELECT array_agg(status ORDER BY hold_id) FROM ledger.holds").fetchone()[
        0
    ]
    with pytest.raises(psycopg.Error) as info:
        call(conn, function, **params)
    assert info.value.sqlstate == sqlstate, (function, params, info.value.sqlstate, str(info.value))
    assert counts(conn) == before
    assert (
        conn.execute("SELECT array_agg(status ORDER BY hold_id) FROM ledger.holds").fetchone()[0]
        == states
    )
    return json.loads(info.value.diag.message_detail or "{}")


@pytest.fixture
def funded(conn):
    post(conn, "ann", "CREDIT_ADD", "fund-ann", amount=20)
    return conn


def test_a_hold_reserves_credits(funded):
    conn = funded
    h = hold(conn, "ann", "h1", 8)
    assert {k: h[k] for k in ("owner_id", "app", "operation", "amount", "status", "replayed")} == {
        "owner_id": "ann",
        "app": "core",
        "operation": "CREDIT_SPEND",
        "amount": 8,
        "status": "active",
        "replayed": False,
    }
    now = conn.execute("SELECT now()").fetchone()[0]
    assert timedelta(minutes=14) < h["expires_at"] - now <= timedelta(minutes=15, seconds=5)
    assert available(conn, "ann") == (20, 8, 12)
    assert one(conn, "get_hold", hold_id=h["hold_id"])["status"] == "active"
    assert [r["hold_id"] for r in call(conn, "list_holds", owner_id="ann")] == [h["hold_id"]]
    # the default amount of an operation with a fixed amount
    content = hold(conn, "ann", "h2", operation="CONTENT_CREATION", app="example_app")
    assert content["amount"] == 5
    assert available(conn, "ann") == (20, 13, 7)
    assert [r["hold_id"] for r in call(conn, "list_holds", owner_id="ann")] == [
        content["hold_id"],
        h["hold_id"],
    ]
    assert call(conn, "verify") == []


def test_holds_reduce_what_debits_and_new_holds_may_take(funded):
    conn = funded
    hold(conn, "ann", "h1", 15)
    detail = fails(
        conn,
        "LG001",
        "post_entry",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="spend",
        amount=6,
    )
    assert (detail["needed"], detail["available"]) == (6, 5)
    fails(
        conn,
        "LG001",
        "create_hold",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h2",
        amount=6,
    )
    fails(
        conn,
        "LG001",
        "transfer",
        from_owner="ann",
        to_owner="bob",
        amount=6,
        app="core",
        idempotency_key="t1",
    )
    assert post(conn, "ann", "CREDIT_SPEND", "spend-5", amount=5)["balance"] == 15
    assert available(conn, "ann") == (15, 15, 0)


def test_create_hold_errors(funded):
    conn = funded
    base = {
        "owner_id": "ann",
        "app": "core",
        "operation": "CREDIT_SPEND",
        "idempotency_key": "k",
        "amount": 1,
    }
    cases = [
        ({"operation": "CREDIT_ADD"}, "LG007"),  # holds reserve debits only
        ({"ttl": timedelta(milliseconds=500)}, "LG007"),
        ({"ttl": timedelta(days=7, seconds=1)}, "LG007"),
        ({"ttl": None}, "LG007"),
        ({"amount": 0}, "LG006"),
        ({"amount": -1}, "LG006"),
        ({"amount": Decimal("1.5")}, "LG006"),
        ({"amount": 10**30}, "LG006"),
        ({"amount": 1_000_001}, "LG006"),
        ({"amount": 21}, "LG001"),
        ({"owner_id": "nobody"}, "LG001"),
        ({"operation": "NO_SUCH_OP"}, "LG002"),
        ({"operation": "CONTENT_CREATION"}, "LG003"),  # example_app's, called as core
        ({"operation": "TRANSFER_OUT"}, "LG003"),
        ({"app": "no_app"}, "LG011"),
        ({"owner_id": ""}, "LG007"),
        ({"owner_id": None}, "LG007"),
        ({"idempotency_key": ""}, "LG007"),
        ({"idempotency_key": "k" * 256}, "LG007"),
    ]
    for change, sqlstate in cases:
        fails(conn, sqlstate, "create_hold", **{**base, **change})
    assert (
        conn.execute("SELECT count(*) FROM ledger.accounts WHERE owner_id = 'nobody'").fetchone()[0]
        == 0
    )


def test_create_hold_is_idempotent(funded):
    conn = funded
    first = hold(conn, "ann", "same", 4)
    again = hold(conn, "ann", "same", 4)
    assert again == {**first, "replayed": True}
    assert conn.execute("SELECT count(*) FROM ledger.holds").fetchone()[0] == 1
    fails(
        conn,
        "LG005",
        "create_hold",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="same",
        amount=5,
    )
    fails(
        conn,
        "LG005",
        "create_hold",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="same",
        amount=4,
        ttl=timedelta(minutes=1),
    )
    # keys are unique per app across entries and holds
    fails(
        conn,
        "LG005",
        "create_hold",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="fund-ann",
        amount=1,
    )
    fails(
        conn,
        "LG005",
        "post_entry",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="same",
        amount=4,
    )
    # another app may use the key
    assert (
        hold(conn, "ann", "same", operation="CONTENT_ACCESS", app="example_app")["replayed"]
        is False
    )


def test_capture_the_whole_hold(funded):
    conn = funded
    h = hold(conn, "ann", "h1", 8)
    entry = one(conn, "capture_hold", hold_id=h["hold_id"], app="core")
    assert (
        entry["owner_id"],
        entry["operation"],
        entry["amount"],
        entry["balance"],
        entry["replayed"],
    ) == ("ann", "CREDIT_SPEND", -8, 12, False)
    stored = one(conn, "get_hold", hold_id=h["hold_id"])
    assert (stored["status"], stored["captured_amount"], stored["entry_id"]) == (
        "captured",
        8,
        entry["entry_id"],
    )
    assert stored["closed_at"] is not None
    journal = one(conn, "get_entry", entry_id=entry["entry_id"])
    assert (journal["hold_id"], journal["metadata"]) == (h["hold_id"], {"hold_id": h["hold_id"]})
    assert available(conn, "ann") == (12, 0, 12)
    # a repeated capture is a replay
    assert one(conn, "capture_hold", hold_id=h["hold_id"], app="core") == {
        **entry,
        "replayed": True,
    }
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == 2
    assert call(conn, "verify") == []


def test_capture_part_of_a_hold_frees_the_rest(funded):
    conn = funded
    h = hold(conn, "ann", "h1", 8)
    entry = one(conn, "capture_hold", hold_id=h["hold_id"], app="core", amount=3)
    assert (entry["amount"], entry["balance"]) == (-3, 17)
    assert available(conn, "ann") == (17, 0, 17)
    assert one(conn, "get_hold", hold_id=h["hold_id"])["captured_amount"] == 3
    assert one(conn, "capture_hold", hold_id=h["hold_id"], app="core", amount=3)["replayed"] is True
    # another capture of a captured hold, with another amount or the whole: not active
    fails(conn, "LG009", "capture_hold", hold_id=h["hold_id"], app="core", amount=2)
    detail = fails(conn, "LG009", "capture_hold", hold_id=h["hold_id"], app="core")
    assert detail["status"] == "captured"
    fails(conn, "LG009", "release_hold", hold_id=h["hold_id"], app="core")


def test_capture_may_use_the_held_credits_themselves(conn):
    post(conn, "cat", "CREDIT_ADD", "fund", amount=5)
    h = hold(conn, "cat", "all", 5)
    assert available(conn, "cat") == (5, 5, 0)
    assert one(conn, "capture_hold", hold_id=h["hold_id"], app="core")["balance"] == 0
    assert call(conn, "verify") == []


def test_capture_and_release_errors(funded):
    conn = funded
    h = hold(conn, "ann", "h1", 8)
    hold_id = h["hold_id"]
    for amount in (0, -1, 9, Decimal("2.5"), 10**30):
        fails(conn, "LG006", "capture_hold", hold_id=hold_id, app="core", amount=amount)
    fails(conn, "LG003", "capture_hold", hold_id=hold_id, app="example_app")
    fails(conn, "LG003", "release_hold", hold_id=hold_id, app="example_app")
    fails(conn, "LG008", "capture_hold", hold_id=hold_id + 1000, app="core")
    fails(conn, "LG008", "release_hold", hold_id=hold_id + 1000, app="core")
    fails(conn, "LG008", "get_hold", hold_id=hold_id + 1000)
    fails(conn, "LG007", "capture_hold", hold_id=None, app="core")
    fails(conn, "LG007", "release_hold", hold_id=None, app="core")
    fails(conn, "LG007", "capture_hold", hold_id=hold_id, app="")
    fails(conn, "LG007", "list_holds", owner_id="")
    assert one(conn, "get_hold", hold_id=hold_id)["status"] == "active"


def test_release_frees_the_credits(funded):
    conn = funded
    h = hold(conn, "ann", "h1", 8)
    released = one(conn, "release_hold", hold_id=h["hold_id"], app="core")
    assert (released["status"], released["replayed"]) == ("released", False)
    assert available(conn, "ann") == (20, 0, 20)
    assert one(conn, "release_hold", hold_id=h["hold_id"], app="core") == {
        **released,
        "replayed": True,
    }
    detail = fails(conn, "LG009", "capture_hold", hold_id=h["hold_id"], app="core")
    assert detail["status"] == "released"
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == 1


def test_a_hold_expires_by_the_clock_alone(funded):
    conn = funded
    h = hold(conn, "ann", "short", 15, ttl=timedelta(seconds=1))
    assert available(conn, "ann") == (20, 15, 5)
    time.sleep(1.2)
    assert available(conn, "ann") == (20, 0, 20)
    assert one(conn, "get_hold", hold_id=h["hold_id"])["status"] == "expired"
    assert call(conn, "list_holds", owner_id="ann")[0]["status"] == "expired"
    # the stored row is untouched: no job ran
    assert conn.execute("SELECT status FROM ledger.holds").fetchone()[0] == "active"
    assert (
        fails(conn, "LG009", "capture_hold", hold_id=h["hold_id"], app="core")["status"]
        == "expired"
    )
    fails(conn, "LG009", "release_hold", hold_id=h["hold_id"], app="core")
    # the freed credits can be spent and held again
    assert post(conn, "ann", "CREDIT_SPEND", "after", amount=18)["balance"] == 2
    assert hold(conn, "ann", "short", 15, ttl=timedelta(seconds=1))["replayed"] is True
    assert call(conn, "verify") == []


def test_capture_racing_release_exactly_one_wins(db_url, conn):
    post(conn, "dan", "CREDIT_ADD", "fund", amount=1000)
    holds = [hold(conn, "dan", f"race-{i}", 10)["hold_id"] for i in range(10)]

    def attempt(kind: str, hold_id: int, barrier: threading.Barrier) -> str:
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute("SET lock_timeout = '20s'")
            barrier.wait()
            try:
                call(
                    c,
                    "capture_hold" if kind == "capture" else "release_hold",
                    hold_id=hold_id,
                    app="core",
                )
                return kind
            except psycopg.Error as exc:
                return exc.sqlstate or "?"

    winners = []
    with ThreadPoolExecutor(2) as pool:
        for hold_id in holds:
            barrier = threading.Barrier(2)
            attempts = [
                pool.submit(attempt, kind, hold_id, barrier) for kind in ("capture", "release")
            ]
            outcome = sorted(a.result() for a in attempts)
            assert outcome in (["LG009", "capture"], ["LG009", "release"]), outcome
            winner = next(o for o in outcome if o != "LG009")
            status = one(conn, "get_hold", hold_id=hold_id)["status"]
            assert status == {"capture": "captured", "release": "released"}[winner]
            winners.append(winner)
    captured = winners.count("capture")
    assert one(conn, "get_balance", owner_id="dan")["balance"] == 1000 - 10 * captured
    assert (
        conn.execute("SELECT count(*) FROM ledger.entries WHERE hold_id IS NOT NULL").fetchone()[0]
        == captured
    )
    assert call(conn, "verify") == []


def test_concurrent_holds_never_reserve_more_than_available(db_url, conn):
    post(conn, "eli", "CREDIT_ADD", "fund", amount=50)
    barrier = threading.Barrier(6)

    def work(index: int) -> int:
        made = 0
        with psycopg.connect(db_url, autocommit=True) as c:
            barrier.wait()
            for i in range(10):
                try:
                    hold(c, "eli", f"c{index}-{i}", 1)
                    made += 1
                except psycopg.Error as exc:
                    assert exc.sqlstate == "LG001"
        return made

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(work, range(6))) == 50
    assert available(conn, "eli") == (50, 50, 0)


def test_roles(funded):
    """A service (a login member of ledger_app) holds and captures, and
    created_by names it; a member of ledger_reader reads and cannot write."""
    conn = funded
    service, reader = login_member(conn, "ledger_app"), login_member(conn, "ledger_reader")
    conn.execute(f"SET ROLE {service}")
    h = hold(conn, "ann", "role", 2)
    assert conn.execute("SELECT created_by FROM ledger.holds").fetchone()[0] == service
    one(conn, "capture_hold", hold_id=h["hold_id"], app="core", amount=1)
    conn.execute(f"SET ROLE {reader}")
    assert one(conn, "get_hold", hold_id=h["hold_id"])["status"] == "captured"
    assert len(call(conn, "list_holds", owner_id="ann")) == 1
    for function, params in [
        (
            "create_hold",
            {"owner_id": "ann", "app": "core", "operation": "CREDIT_SPEND", "idempotency_key": "r"},
        ),
        ("capture_hold", {"hold_id": h["hold_id"], "app": "core"}),
        ("release_hold", {"hold_id": h["hold_id"], "app": "core"}),
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            call(conn, function, **params)
    conn.execute("RESET ROLE")


def open_holds(conn: psycopg.Connection[Any], owner: str) -> int:
    return conn.execute(
        "SELECT open_holds FROM ledger.accounts WHERE owner_id = %s", (owner,)
    ).fetchone()[0]


def test_the_account_counts_its_open_holds(funded):
    conn = funded
    first = hold(conn, "ann", "h1", 3)["hold_id"]
    second = hold(conn, "ann", "h2", 3)["hold_id"]
    third = hold(conn, "ann", "h3", 3)["hold_id"]
    hold(conn, "ann", "h1", 3)  # a replay opens nothing
    assert open_holds(conn, "ann") == 3
    call(conn, "capture_hold", hold_id=first, app="core", amount=2)
    call(conn, "capture_hold", hold_id=first, app="core", amount=2)  # replay
    assert open_holds(conn, "ann") == 2
    call(conn, "release_hold", hold_id=second, app="core")
    call(conn, "release_hold", hold_id=second, app="core")  # replay
    assert open_holds(conn, "ann") == 1
    fails(conn, "LG009", "capture_hold", hold_id=second, app="core")
    assert open_holds(conn, "ann") == 1
    call(conn, "release_hold", hold_id=third, app="core")
    assert open_holds(conn, "ann") == 0
    assert call(conn, "verify") == []


def test_an_expired_hold_stays_open_but_reserves_nothing(funded):
    conn = funded
    hold(conn, "ann", "short", 15, ttl=timedelta(seconds=1))
    time.sleep(1.2)
    assert open_holds(conn, "ann") == 1
    assert post(conn, "ann", "CREDIT_SPEND", "after-expiry", amount=20)["balance"] == 0
    assert call(conn, "verify") == []


def test_a_debit_waiting_for_the_lock_sees_a_hold_created_meanwhile(db_url, funded):
    """The one-statement debit re-checks the account row after its lock wait;
    the hold committed during the wait must make it refuse (LG001), not
    spend credits the hold reserved."""
    conn = funded  # ann has 20, no holds
    with psycopg.connect(db_url) as holder:
        hold(holder, "ann", "reserve", 15)  # open transaction: holds ann's lock

        def debit() -> str:
            with psycopg.connect(db_url, autocommit=True) as c:
                try:
                    post(c, "ann", "CREDIT_SPEND", "waits", amount=10)
                    return "ok"
                except psycopg.Error as exc:
                    return exc.sqlstate or "?"

        with ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(debit)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the debit waits for the lock
                waiting = lock_waits(conn, "%post_entry%")
                if waiting:
                    break
                time.sleep(0.02)
            assert waiting == 1
            holder.commit()
            assert outcome.result(timeout=20) == "LG001"
    assert available(conn, "ann") == (20, 15, 5)
    assert call(conn, "verify") == []


# A statement-level trigger that sleeps on the second UPDATE of ledger.accounts in
# a transaction: it stretches the time between a debit's decision and what runs
# after it in the same call, should a debit ever update the account before it
# decides. On Citus it fires on the owner's shard, in the worker's session that
# runs the whole call (citus.enable_unsafe_triggers lets a distributed table
# have it; on plain PostgreSQL the setting is an unused placeholder).
PAUSE_AFTER_THE_DECISION = [
    "CREATE FUNCTION public.pause_after_decision() RETURNS trigger LANGUAGE plpgsql AS $$"
    " DECLARE n integer := coalesce(nullif(current_setting('test.fired', true), ''), '0')::integer + 1;"
    " BEGIN PERFORM set_config('test.fired', n::text, true);"
    " IF n = 2 THEN PERFORM pg_sleep(1.3); END IF;"
    " RETURN NULL; END $$",
    "SET citus.enable_unsafe_triggers = on",
    "CREATE TRIGGER pause_after_decision AFTER UPDATE ON ledger.accounts"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.pause_after_decision()",
    "RESET citus.enable_unsafe_triggers",
]


def test_a_refused_debit_explains_itself_with_the_instant_it_decided(funded):
    """One clock decision per hold and call: a debit refused because a hold
    still counted must not report `available` as if the hold had expired
    (a second clock reading after the decision), even when the hold expires
    between the two."""
    conn = funded  # ann has 20
    hold(conn, "ann", "short", 15, ttl=timedelta(seconds=1))
    for statement in PAUSE_AFTER_THE_DECISION:
        conn.execute(statement)
    with pytest.raises(psycopg.Error) as info:
        post(conn, "ann", "CREDIT_SPEND", "spend-10", amount=10)
    assert info.value.sqlstate == "LG001"
    detail = json.loads(info.value.diag.message_detail)
    # It was refused because the hold counted (20 - 15 = 5 < 10); it says so.
    assert (detail["needed"], detail["available"]) == (10, 5), detail
    # The hold has expired by now (a refused debit now decides before it
    # writes, so the pause above may not have run: wait out the ttl): the
    # same debit passes.
    time.sleep(1.3)
    assert post(conn, "ann", "CREDIT_SPEND", "spend-10b", amount=10)["balance"] == 10


def test_capture_and_debit_queued_behind_a_lock_across_the_expiry_agree(db_url, funded):
    """A third session holds the owner's row while the hold expires; a capture and a
    debit queue behind it (in both orders). Each decides with a clock read
    after it has the lock, so both see the hold expired: the capture is LG009
    and the debit, no longer reduced by the hold, passes. Never both refused."""
    conn = funded
    outcomes = []
    for order in (("capture", "debit"), ("debit", "capture")):
        owner = f"q-{order[0]}"
        post(conn, owner, "CREDIT_ADD", f"fund-{owner}", amount=20)
        h = hold(conn, owner, f"h-{owner}", 15, ttl=timedelta(seconds=1))

        def attempt(kind: str, h: dict[str, Any] = h, owner: str = owner) -> str:
            with psycopg.connect(db_url, autocommit=True) as c:
                try:
                    if kind == "capture":
                        call(c, "capture_hold", hold_id=h["hold_id"], app="core")
                        return "captured"
                    post(c, owner, "CREDIT_SPEND", f"d-{owner}", amount=6)
                    return "debited"
                except psycopg.Error as exc:
                    return exc.sqlstate or "?"

        with psycopg.connect(db_url) as holder, ThreadPoolExecutor(2) as pool:
            holder.execute("SELECT FROM ledger.accounts WHERE owner_id = %s FOR UPDATE", (owner,))
            futures = {}
            for kind in order:  # queue in this order
                futures[kind] = pool.submit(attempt, kind)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    waiting = lock_waits(conn)
                    if waiting == len(futures):
                        break
                    time.sleep(0.01)
            remaining = h["expires_at"] - conn.execute("SELECT clock_timestamp()").fetchone()[0]
            time.sleep(max(0.0, remaining.total_seconds()) + 0.05)
            holder.commit()
            outcomes.append(
                (futures["capture"].result(timeout=20), futures["debit"].result(timeout=20))
            )
    assert outcomes == [("LG009", "debited"), ("LG009", "debited")]
    assert call(conn, "verify") == []
