"""Events: the outbox written with every change, the feed's cursor that
never skips (a transaction held open while others commit), redaction per
app, balance alerts once per crossing, clock-driven events recorded when
observed. Plain PostgreSQL and the Citus cluster (CITUS_CONTRACT)."""

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

from .helpers import call, one, post


def _now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def read_all(
    conn: psycopg.Connection[Any], app: str = "core", after: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Every event after `after`, following cursors page by page; the last cursor."""
    events: list[dict[str, Any]] = []
    while True:
        page = call(conn, "list_events", app=app, after=after, max_rows=50)
        if not page:
            return events, after
        events.extend(page)
        after = page[-1]["cursor"]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_every_change_writes_its_events(conn):
    _, cursor = read_all(conn)
    credit = post(conn, "ev", "CREDIT_ADD", "c", amount=50)
    events, cursor = read_all(conn, after=cursor)
    assert types(events) == ["entry.posted"]
    assert events[0]["entry_id"] == credit["entry_id"]
    assert events[0]["payload"]["amount"] == 50 and events[0]["payload"]["balance"] == 50
    assert events[0]["seq"] == 1 and events[0]["owner_id"] == "ev"

    hold = one(
        conn,
        "create_hold",
        owner_id="ev",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h",
        amount=5,
    )
    one(conn, "capture_hold", hold_id=hold["hold_id"], app="core", amount=3)
    other = one(
        conn,
        "create_hold",
        owner_id="ev",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h2",
        amount=5,
    )
    one(conn, "release_hold", hold_id=other["hold_id"], app="core")
    events, cursor = read_all(conn, after=cursor)
    assert types(events) == [
        "hold.created",
        "entry.posted",
        "hold.captured",
        "hold.created",
        "hold.released",
    ]
    assert events[2]["payload"]["captured_amount"] == 3 and events[2]["hold_id"] == hold["hold_id"]

    moved = one(
        conn, "transfer", from_owner="ev", to_owner="ew", amount=7, app="core", idempotency_key="t"
    )
    events, cursor = read_all(conn, after=cursor)
    assert types(events) == ["entry.posted", "entry.posted", "transfer.posted"]
    assert {e["owner_id"] for e in events[:2]} == {"ev", "ew"}
    assert events[2]["payload"]["to_entry_id"] == moved["to_entry_id"]

    debit = post(conn, "ev", "CREDIT_SPEND", "d", amount=2)
    call(conn, "reverse_entry", entry_id=debit["entry_id"], app="core", idempotency_key="r")
    events, cursor = read_all(conn, after=cursor)
    assert types(events) == ["entry.posted", "entry.posted", "entry.reversed"]
    assert events[2]["entry_id"] == debit["entry_id"]

    items = [
        {
            "owner_id": f"b{i}",
            "app": "core",
            "operation": "CREDIT_ADD",
            "idempotency_key": "k",
            "amount": 1,
        }
        for i in range(3)
    ]
    call(conn, "post_entries", entries=json.dumps(items))
    events, cursor = read_all(conn, after=cursor)
    assert types(events) == ["entry.posted"] * 3
    # Every entry has exactly one entry.posted event.
    assert conn.execute(
        "SELECT count(*) FROM ledger.entries e WHERE (SELECT count(*) FROM ledger.events v"
        " WHERE v.owner_id = e.owner_id AND v.entry_id = e.entry_id AND v.type = 'entry.posted') <> 1"
    ).fetchone() == (0,)


def test_a_failed_call_writes_no_event(conn):
    _, cursor = read_all(conn)
    with pytest.raises(psycopg.Error) as err:
        post(conn, "nobody", "CREDIT_SPEND", "x", amount=5)
    assert err.value.sqlstate == "LG001"
    post(conn, "fa", "CREDIT_ADD", "c", amount=1)
    with pytest.raises(psycopg.Error):
        post(conn, "fa", "CREDIT_SPEND", "x", amount=5)
    events, _ = read_all(conn, after=cursor)
    assert types(events) == ["entry.posted"]


def test_the_cursor_never_skips_an_event_that_commits_late(db_url, conn):
    post(conn, "lat", "CREDIT_ADD", "seed", amount=5)
    _, cursor = read_all(conn)
    with psycopg.connect(db_url) as slow:
        # Written first (its event id is the lowest), committed last.
        late = post(slow, "late-owner", "CREDIT_ADD", "late", amount=1)
        for i in range(3):
            post(conn, f"quick-{i}", "CREDIT_ADD", "q", amount=1)
        events, cursor = read_all(conn, after=cursor)
        assert [e["owner_id"] for e in events] == ["quick-0", "quick-1", "quick-2"]
        slow.commit()
    events, cursor = read_all(conn, after=cursor)
    assert [(e["owner_id"], e["entry_id"]) for e in events] == [("late-owner", late["entry_id"])]
    assert read_all(conn, after=cursor)[0] == []


def test_a_reader_following_cursors_sees_every_event_once_under_concurrent_writers(db_url, conn):
    _, start = read_all(conn)
    stop = threading.Event()
    seen: Counter[int] = Counter()

    def reader() -> None:
        after = start
        with psycopg.connect(db_url, autocommit=True) as c:
            while True:
                done = stop.is_set()
                page = call(c, "list_events", app="core", after=after, max_rows=100)
                for event in page:
                    seen[event["event_id"]] += 1
                if page:
                    after = page[-1]["cursor"]
                elif done:
                    return

    def writer(index: int) -> int:
        with psycopg.connect(db_url) as c:
            for i in range(40):
                post(c, f"w{index % 3}", "CREDIT_ADD", f"w{index}-{i}", amount=1)
                if i % 4 == 3:
                    time.sleep(0.005)  # transactions of different lengths
                    c.commit()
            c.commit()
        return 40

    thread = threading.Thread(target=reader)
    thread.start()
    with ThreadPoolExecutor(8) as pool:
        written = sum(pool.map(writer, range(8)))
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert written == 320
    ids = {
        row[0]
        for row in conn.execute("SELECT event_id FROM ledger.events WHERE owner_id LIKE 'w%'")
    }
    assert len(ids) == 320
    assert set(seen) == ids and set(seen.values()) == {1}


def test_other_apps_metadata_and_keys_are_left_out(conn):
    one(conn, "define_app", app="shop")
    _, cursor = read_all(conn)
    one(
        conn,
        "post_entry",
        owner_id="red",
        app="shop",
        operation="CREDIT_ADD",
        idempotency_key="secret-key",
        amount=5,
        metadata='{"order": 42}',
    )
    mine, _ = read_all(conn, app="shop", after=cursor)
    theirs, _ = read_all(conn, app="core", after=cursor)
    assert mine[0]["payload"]["metadata"] == {"order": 42}
    assert mine[0]["payload"]["idempotency_key"] == "secret-key"
    assert "metadata" not in theirs[0]["payload"] and "idempotency_key" not in theirs[0]["payload"]
    assert theirs[0]["payload"]["amount"] == 5  # balances are shared


def test_balance_alerts_fire_once_per_crossing(conn):
    one(conn, "define_app", app="shop")
    assert one(conn, "set_balance_alert", app="shop", threshold=10)["set_balance_alert"] == [10]
    assert one(conn, "set_balance_alert", app="shop", threshold=10)["set_balance_alert"] == [10]
    post(conn, "al", "CREDIT_ADD", "c1", amount=15)
    _, cursor = read_all(conn)
    post(conn, "al", "CREDIT_SPEND", "d1", amount=7)  # 15 -> 8: below 10
    post(conn, "al", "CREDIT_SPEND", "d2", amount=3)  # 8 -> 5: still below, nothing
    post(conn, "al", "CREDIT_ADD", "c2", amount=7)  # 5 -> 12: recovered
    hold = one(
        conn,
        "create_hold",
        owner_id="al",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h",
        amount=12,
    )  # available 12 -> 0: below, depleted
    one(conn, "release_hold", hold_id=hold["hold_id"], app="core")  # 0 -> 12: recovered
    events, _ = read_all(conn, after=cursor)
    alerts = [
        (e["type"], e["payload"].get("available"))
        for e in events
        if e["type"].startswith("balance.")
    ]
    assert alerts == [
        ("balance.below_threshold", 8),
        ("balance.recovered", 12),
        ("balance.below_threshold", 0),
        ("balance.depleted", 0),
        ("balance.recovered", 12),
    ]
    assert all(e["payload"]["app"] == "shop" for e in events if e["type"].startswith("balance."))
    assert one(conn, "remove_balance_alert", app="shop", threshold=10)["remove_balance_alert"] == []
    with pytest.raises(psycopg.Error) as err:
        call(conn, "set_balance_alert", app="shop", threshold=0)
    assert err.value.sqlstate == "LG007"


def test_clock_changes_are_recorded_when_observed_with_the_instant_they_happened(conn):
    expires = _now(conn) + timedelta(seconds=2)
    one(
        conn,
        "grant_credits",
        owner_id="clk",
        app="core",
        operation="CREDIT_ADD",
        idempotency_key="g",
        amount=5,
        expires_at=expires,
    )
    post(conn, "clk", "CREDIT_ADD", "keep", amount=2)
    hold = one(
        conn,
        "create_hold",
        owner_id="clk",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h",
        amount=1,
        ttl=timedelta(seconds=1),
    )
    _, cursor = read_all(conn)
    time.sleep(max(0.0, (expires - _now(conn)).total_seconds()) + 0.05)
    assert read_all(conn, after=cursor)[0] == []  # nothing is recorded by reading
    post(conn, "clk", "CREDIT_ADD", "next", amount=1)  # the owner's next write observes both
    events, _ = read_all(conn, after=cursor)
    by_type = {e["type"]: e for e in events}
    assert set(types(events)) == {"entry.posted", "grant.expired", "hold.expired"}
    assert by_type["grant.expired"]["occurred_at"] == expires
    assert by_type["grant.expired"]["payload"]["expired"] == 5
    assert by_type["hold.expired"]["hold_id"] == hold["hold_id"]
    assert by_type["hold.expired"]["occurred_at"] == hold["expires_at"]
    assert one(conn, "get_hold", hold_id=hold["hold_id"])["status"] == "expired"
    assert call(conn, "verify") == []


def test_grant_expiring_is_sent_once_ahead_of_the_expiry(conn):
    soon = _now(conn) + timedelta(hours=5)
    one(
        conn,
        "grant_credits",
        owner_id="warn",
        app="core",
        operation="CREDIT_ADD",
        idempotency_key="g",
        amount=5,
        expires_at=soon,
    )
    one(
        conn,
        "grant_credits",
        owner_id="warn",
        app="core",
        operation="CREDIT_ADD",
        idempotency_key="far",
        amount=5,
        expires_at=soon + timedelta(days=5),
    )
    _, cursor = read_all(conn)
    assert one(conn, "expire_grants", warn_before=timedelta(hours=1))["expire_grants"] == 0
    assert read_all(conn, after=cursor)[0] == []
    one(conn, "expire_grants", warn_before=timedelta(days=1))
    one(conn, "expire_grants", warn_before=timedelta(days=1))
    events, _ = read_all(conn, after=cursor)
    assert types(events) == ["grant.expiring"]
    assert (
        events[0]["payload"]["expires_at"] == soon.isoformat()
        or events[0]["payload"]["remaining"] == 5
    )


def test_a_malformed_cursor_is_refused(conn):
    for bad in ("x", "p", "p-1", "p12345678901234567890"):
        with pytest.raises(psycopg.Error) as err:
            call(conn, "list_events", app="core", after=bad)
        assert err.value.sqlstate == "LG007"
    with pytest.raises(psycopg.Error) as err:
        call(conn, "list_events", app="core", max_rows=0)
    assert err.value.sqlstate == "LG007"
