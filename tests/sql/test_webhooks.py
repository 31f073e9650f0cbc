"""Webhook endpoints, deliveries, claims and the delivery log in SQL (sql/80_webhooks.sql).

Runs on plain PostgreSQL and on the Citus cluster (tests/conftest.py,
CITUS_CONTRACT): the webhook tables are plain tables of the coordinator
there, and every transaction below (a claim, a record, a resend) runs on it.
The deliveries the claims hand out are written here directly (as the
superuser) where a test is about claiming and recording; the fan-out from
the event feed is tested with real events in tests/sql/test_webhook_fan_out.py.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from .helpers import call, one


def endpoint(conn, app="core", url="https://example.com/hook", **params) -> dict[str, Any]:
    return one(conn, "create_webhook_endpoint", app=app, url=url, **params)


def deliveries(conn, endpoint_id: int, events: range | list[int]) -> list[int]:
    """Pending deliveries of made-up events, due now (what the fan-out writes)."""
    ids = []
    for event_id in events:
        row = conn.execute(
            "INSERT INTO ledger.webhook_deliveries (endpoint_id, event_id, event_type, webhook_id,"
            " body, created_at, retry_from, next_attempt_at)"
            " VALUES (%s, %s, 'entry.posted', 'evt_' || %s, %s, now(), now(), now() - interval '1 ms')"
            " RETURNING delivery_id",
            (endpoint_id, event_id, event_id, json.dumps({"type": "entry.posted", "n": event_id})),
        ).fetchone()
        assert row is not None
        ids.append(row[0])
    return ids


def claim(conn, max_rows=100, lease=timedelta(seconds=30), **params) -> list[dict[str, Any]]:
    return call(conn, "claim_webhook_deliveries", max_rows=max_rows, lease=lease, **params)


def record(conn, *outcomes: dict[str, Any], **params) -> int:
    return int(
        one(conn, "record_webhook_attempts", outcomes=json.dumps(list(outcomes)), **params)[
            "record_webhook_attempts"
        ]
    )


def delivery(conn, delivery_id: int) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT status, attempts, next_attempt_at > clock_timestamp() AS later, leased_until,"
        " last_status_code, last_error, finished_at IS NOT NULL AS finished"
        " FROM ledger.webhook_deliveries WHERE delivery_id = %s",
        (delivery_id,),
    ).fetchall()
    assert len(rows) == 1
    names = ["status", "attempts", "later", "leased_until", "last_status_code", "last_error", "finished"]
    return dict(zip(names, rows[0], strict=True))


def sqlstate_and_detail(err: pytest.ExceptionInfo[psycopg.Error]) -> tuple[str | None, dict[str, Any]]:
    return err.value.sqlstate, json.loads(err.value.diag.message_detail or "{}")


def stored_endpoints(conn) -> int:
    row = conn.execute("SELECT count(*) FROM ledger.webhook_endpoints").fetchone()
    assert row is not None
    return int(row[0])


# ---- endpoints --------------------------------------------------------------------------------


def test_an_endpoint_gets_a_secret_shown_once(conn):
    first = endpoint(conn, description="orders service")
    second = endpoint(conn, app="example_app", event_types=["hold.created", "entry.posted"])
    for created in (first, second):
        assert created["secret"].startswith("whsec_")
        assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
        assert created["active"] is True and created["disabled_at"] is None
    assert first["secret"] != second["secret"]
    assert first["event_types"] is None  # every type
    assert second["event_types"] == ["entry.posted", "hold.created"]  # sorted, each once
    listed = call(conn, "list_webhook_endpoints")
    assert [e["endpoint_id"] for e in listed] == [first["endpoint_id"], second["endpoint_id"]]
    assert all("secret" not in e for e in listed)
    assert [e["endpoint_id"] for e in call(conn, "list_webhook_endpoints", app="example_app")] == [
        second["endpoint_id"]
    ]
    got = one(conn, "get_webhook_endpoint", endpoint_id=first["endpoint_id"], app="core")
    assert got == {k: v for k, v in first.items() if k != "secret"}


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"url": None}, "url", "required"),
        ({"url": "ftp://example.com/x"}, "url", "invalid"),
        ({"url": "example.com/hook"}, "url", "invalid"),
        ({"url": "https://exa mple.com/"}, "url", "invalid"),
        ({"url": "https://"}, "url", "invalid"),
        ({"url": "https://example.com/" + "x" * 2040}, "url", "invalid"),
        ({"event_types": []}, "event_types", "invalid"),
        ({"event_types": ["entry.posted", "entry.psoted"]}, "event_types", "unknown event type"),
        ({"event_types": ["entry.posted", None]}, "event_types", "unknown event type"),
        ({"description": "d" * 256}, "description", "too long"),
    ],
    ids=[
        "no url",
        "ftp",
        "no scheme",
        "space",
        "no host",
        "too long",
        "no types",
        "typo",
        "null type",
        "long description",
    ],
)
def test_bad_input_is_lg007_naming_the_field_and_nothing_is_written(conn, params, field, reason):
    given = {"app": "core", "url": "https://example.com/hook", **params}
    with pytest.raises(psycopg.Error) as err:
        one(conn, "create_webhook_endpoint", **given)
    sqlstate, detail = sqlstate_and_detail(err)
    assert sqlstate == "LG007", err.value
    assert (detail["field"], detail["reason"]) == (field, reason)
    if reason == "unknown event type":
        assert "entry.posted" in detail["known"]
    assert stored_endpoints(conn) == 0


def test_an_unknown_app_is_lg011(conn):
    with pytest.raises(psycopg.Error) as err:
        endpoint(conn, app="nobody")
    assert err.value.sqlstate == "LG011"
    with pytest.raises(psycopg.Error) as err:
        call(conn, "list_webhook_endpoints", app="nobody")
    assert err.value.sqlstate == "LG011"


def test_another_apps_endpoint_is_not_found(conn):
    theirs = endpoint(conn, app="example_app")["endpoint_id"]
    for function, params in [
        ("get_webhook_endpoint", {}),
        ("set_webhook_endpoint_active", {"active": False}),
        ("delete_webhook_endpoint", {}),
        ("list_webhook_deliveries", {}),
        ("list_webhook_attempts", {}),
    ]:
        with pytest.raises(psycopg.Error) as err:
            call(conn, function, endpoint_id=theirs, app="core", **params)
        sqlstate, detail = sqlstate_and_detail(err)
        assert sqlstate == "LG008", function
        assert detail == {"kind": "webhook_endpoint", "endpoint_id": theirs, "app": "core"}
    assert one(conn, "get_webhook_endpoint", endpoint_id=theirs)["active"] is True
    assert stored_endpoints(conn) == 1


def test_disable_and_enable_are_idempotent(conn):
    endpoint_id = endpoint(conn)["endpoint_id"]
    off = one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=False)
    assert off["active"] is False and off["disabled_at"] is not None
    again = one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=False)
    assert again == off
    on = one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=True)
    assert on["active"] is True and on["disabled_at"] is None
    with pytest.raises(psycopg.Error) as err:
        one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=None)
    assert err.value.sqlstate == "LG007"


def test_delete_takes_the_deliveries_and_their_log_with_it(conn):
    endpoint_id = endpoint(conn)["endpoint_id"]
    kept = endpoint(conn)["endpoint_id"]
    [first, _] = deliveries(conn, endpoint_id, [1, 2])
    deliveries(conn, kept, [1])
    [claimed] = claim(conn, max_rows=1)
    record(conn, {"delivery_id": claimed["delivery_id"], "attempt": 1, "ok": True, "status_code": 204})
    gone = one(conn, "delete_webhook_endpoint", endpoint_id=endpoint_id, app="core")
    assert gone["endpoint_id"] == endpoint_id
    assert conn.execute(
        "SELECT (SELECT count(*) FROM ledger.webhook_deliveries),"
        " (SELECT count(*) FROM ledger.webhook_attempts)"
    ).fetchone() == (1, 0)
    with pytest.raises(psycopg.Error) as err:
        one(conn, "delete_webhook_endpoint", endpoint_id=endpoint_id, app="core")
    assert err.value.sqlstate == "LG008"
    assert first == claimed["delivery_id"]


# ---- claims -----------------------------------------------------------------------------------


def test_a_claim_hands_out_what_an_attempt_needs_and_leases_it(conn):
    created = endpoint(conn)
    [delivery_id] = deliveries(conn, created["endpoint_id"], [7])
    [claimed] = claim(conn)
    assert claimed == {
        "delivery_id": delivery_id,
        "attempt": 1,
        "endpoint_id": created["endpoint_id"],
        "url": created["url"],
        "secret": created["secret"],
        "webhook_id": "evt_7",
        "body": json.dumps({"type": "entry.posted", "n": 7}),
    }
    # Leased: no other claim gets it until its outcome is recorded or the lease runs out.
    assert claim(conn) == []
    state = delivery(conn, delivery_id)
    assert state["status"] == "pending" and state["attempts"] == 1 and state["later"]
    assert state["leased_until"] is not None


def test_an_expired_lease_is_claimed_again_and_the_old_outcome_is_ignored(conn):
    [delivery_id] = deliveries(conn, endpoint(conn)["endpoint_id"], [1])
    [first] = claim(conn, lease=timedelta(seconds=1))
    conn.execute(
        "UPDATE ledger.webhook_deliveries SET next_attempt_at = now() - interval '1 ms',"
        " leased_until = now() - interval '1 ms'"
    )  # the lease ran out (its dispatcher died)
    [second] = claim(conn)
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert second["delivery_id"] == delivery_id
    # The first claim's outcome arrives late: it is not the current claim.
    assert record(conn, {"delivery_id": delivery_id, "attempt": 1, "ok": True, "status_code": 200}) == 0
    assert delivery(conn, delivery_id)["status"] == "pending"
    assert record(conn, {"delivery_id": delivery_id, "attempt": 2, "ok": True, "status_code": 200}) == 1
    assert delivery(conn, delivery_id)["status"] == "delivered"


def test_per_endpoint_and_skip_endpoints_share_the_claim(conn):
    busy = endpoint(conn)["endpoint_id"]
    quiet = endpoint(conn)["endpoint_id"]
    deliveries(conn, busy, range(1, 21))
    deliveries(conn, quiet, range(1, 3))
    claimed = claim(conn, max_rows=10, per_endpoint=3)
    by_endpoint = [c["endpoint_id"] for c in claimed]
    assert by_endpoint.count(busy) == 3 and by_endpoint.count(quiet) == 2
    assert claim(conn, max_rows=10, skip_endpoints=[busy]) == []
    assert len(claim(conn, max_rows=10, per_endpoint=100)) == 10


def test_a_disabled_endpoint_is_not_claimed(conn):
    endpoint_id = endpoint(conn)["endpoint_id"]
    deliveries(conn, endpoint_id, [1, 2])
    one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=False)
    assert claim(conn) == []
    one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=True)
    assert len(claim(conn)) == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_rows": 0}, "max_rows"),
        ({"max_rows": 1001}, "max_rows"),
        ({"lease": timedelta(0)}, "lease"),
        ({"lease": timedelta(days=2)}, "lease"),
        ({"per_endpoint": 0}, "per_endpoint"),
    ],
)
def test_claim_arguments_out_of_range_are_lg007(conn, params, field):
    given = {"max_rows": 10, "lease": timedelta(seconds=30), **params}
    with pytest.raises(psycopg.Error) as err:
        call(conn, "claim_webhook_deliveries", **given)
    sqlstate, detail = sqlstate_and_detail(err)
    assert (sqlstate, detail["field"]) == ("LG007", field)


def test_concurrent_claims_never_hand_out_one_delivery_twice(db_url, conn):
    """Four sessions claim at once, over and over: every delivery is handed out
    exactly once (SKIP LOCKED and the lease), and none waits for another."""
    endpoints = [endpoint(conn)["endpoint_id"] for _ in range(3)]
    for endpoint_id in endpoints:
        deliveries(conn, endpoint_id, range(1, 201))
    got: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def claimer(i: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as mine:
                mine.execute("SET lock_timeout = '2s'")
                start.wait()
                while True:
                    rows = claim(mine, max_rows=7)
                    if not rows:
                        return
                    got[i].extend(r["delivery_id"] for r in rows)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    handed_out = [d for mine in got for d in mine]
    assert len(handed_out) == 600 and len(set(handed_out)) == 600


# ---- outcomes ---------------------------------------------------------------------------------


def test_outcomes_deliver_retry_and_fail_at_the_horizon(conn):
    endpoint_id = endpoint(conn)["endpoint_id"]
    ok, retried, beyond, given_up = deliveries(conn, endpoint_id, [1, 2, 3, 4])
    claimed = {c["delivery_id"]: c for c in claim(conn)}
    assert set(claimed) == {ok, retried, beyond, given_up}
    recorded = record(
        conn,
        {"delivery_id": ok, "attempt": 1, "ok": True, "status_code": 200, "duration_ms": 12},
        {"delivery_id": retried, "attempt": 1, "ok": False, "status_code": 500, "error": "HTTP 500", "retry_in": 30},
        {"delivery_id": beyond, "attempt": 1, "ok": False, "error": "timeout after 10 s", "retry_in": 7200},
        {"delivery_id": given_up, "attempt": 1, "ok": False, "status_code": 400, "error": "HTTP 400"},
        horizon=timedelta(hours=1),
    )
    assert recorded == 4
    assert delivery(conn, ok) | {"leased_until": None} == {
        "status": "delivered",
        "attempts": 1,
        "later": False,
        "leased_until": None,
        "last_status_code": 200,
        "last_error": None,
        "finished": True,
    }
    state = delivery(conn, retried)
    assert (state["status"], state["later"], state["leased_until"], state["finished"]) == (
        "pending",
        True,
        None,
        False,
    )
    assert (state["last_status_code"], state["last_error"]) == (500, "HTTP 500")
    assert delivery(conn, beyond)["status"] == "failed"  # its next try would be past the horizon
    assert delivery(conn, given_up)["status"] == "failed"  # no retry_in: failed now
    log = call(conn, "list_webhook_attempts", endpoint_id=endpoint_id, app="core")
    assert sorted((a["event_id"], a["outcome"], a["status_code"]) for a in log) == [
        (1, "delivered", 200),
        (2, "retry", 500),
        (3, "failed", None),
        (4, "failed", 400),
    ]
    # A finished delivery takes no further outcome.
    assert record(conn, {"delivery_id": ok, "attempt": 1, "ok": False, "retry_in": 1}) == 0


@pytest.mark.parametrize("outcomes", ["{}", "not json", "[1"])
def test_outcomes_that_are_not_a_json_array_are_lg007(conn, outcomes):
    with pytest.raises(psycopg.Error) as err:
        one(conn, "record_webhook_attempts", outcomes=outcomes)
    sqlstate, detail = sqlstate_and_detail(err)
    assert (sqlstate, detail["field"]) == ("LG007", "outcomes")


# ---- the log and resend -----------------------------------------------------------------------


def test_the_delivery_log_pages_newest_first_and_filters(conn):
    endpoint_id = endpoint(conn)["endpoint_id"]
    ids = deliveries(conn, endpoint_id, range(1, 6))
    [first] = claim(conn, max_rows=1)
    record(conn, {"delivery_id": first["delivery_id"], "attempt": 1, "ok": True, "status_code": 200})
    page = call(conn, "list_webhook_deliveries", endpoint_id=endpoint_id, app="core", max_rows=2)
    assert [d["delivery_id"] for d in page] == ids[:-3:-1]
    rest = call(
        conn, "list_webhook_deliveries", endpoint_id=endpoint_id, before_id=page[-1]["delivery_id"]
    )
    assert [d["delivery_id"] for d in rest] == ids[-3::-1]
    delivered = call(conn, "list_webhook_deliveries", endpoint_id=endpoint_id, status="delivered")
    assert [(d["delivery_id"], d["last_status_code"]) for d in delivered] == [(ids[0], 200)]
    with pytest.raises(psycopg.Error) as err:
        call(conn, "list_webhook_deliveries", endpoint_id=endpoint_id, status="done")
    assert err.value.sqlstate == "LG007"


def test_resend_makes_a_finished_delivery_due_again_and_leaves_one_in_flight(conn):
    first = endpoint(conn)["endpoint_id"]
    second = endpoint(conn)["endpoint_id"]
    [done] = deliveries(conn, first, [5])
    claim(conn)
    record(conn, {"delivery_id": done, "attempt": 1, "ok": True, "status_code": 200})
    [in_flight] = deliveries(conn, second, [5])
    [claimed] = claim(conn)
    assert claimed["delivery_id"] == in_flight
    resent = call(conn, "resend_webhook_event", event_id=5, app="core")
    assert [(d["delivery_id"], d["status"], d["attempts"]) for d in resent] == [
        (done, "pending", 1),
        (in_flight, "pending", 1),
    ]
    state = delivery(conn, done)
    assert (state["status"], state["later"], state["finished"]) == ("pending", False, False)
    assert delivery(conn, in_flight)["later"]  # still leased: not claimable twice
    [again] = claim(conn)
    assert (again["delivery_id"], again["attempt"], again["webhook_id"]) == (done, 2, "evt_5")
    only_second = call(conn, "resend_webhook_event", event_id=5, app="core", endpoint_id=second)
    assert [d["delivery_id"] for d in only_second] == [in_flight]


@pytest.mark.parametrize(
    ("params", "sqlstate"),
    [
        ({"event_id": 404, "app": "core"}, "LG008"),
        ({"event_id": 5, "app": "example_app"}, "LG008"),
        ({"event_id": 5, "app": "nobody"}, "LG011"),
        ({"event_id": None, "app": "core"}, "LG007"),
    ],
    ids=["no such event", "another app", "unknown app", "no event"],
)
def test_resend_without_a_delivery_of_the_app_fails(conn, params, sqlstate):
    deliveries(conn, endpoint(conn)["endpoint_id"], [5])
    with pytest.raises(psycopg.Error) as err:
        call(conn, "resend_webhook_event", **params)
    assert err.value.sqlstate == sqlstate


# ---- privileges -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["ledger_app", "ledger_reader", "ledger_owner", "ledger_dispatcher"])
@pytest.mark.parametrize("table", ["webhook_endpoints", "webhook_deliveries", "webhook_attempts"])
def test_no_role_reads_or_writes_the_webhook_tables(conn, role, table):
    endpoint(conn)
    conn.execute(f"SET ROLE {role}")
    for statement in (f"SELECT * FROM ledger.{table}", f"DELETE FROM ledger.{table}"):
        with pytest.raises(psycopg.Error) as err:
            conn.execute(statement)
        assert err.value.sqlstate == "42501", statement


@pytest.mark.parametrize("role", ["ledger_app", "ledger_reader", "ledger_owner"])
def test_only_the_dispatcher_claims_and_sees_secrets(conn, role):
    deliveries(conn, endpoint(conn)["endpoint_id"], [1])
    conn.execute(f"SET ROLE {role}")
    for statement in (
        "SELECT * FROM ledger.claim_webhook_deliveries(10, interval '30 s')",
        "SELECT ledger.record_webhook_attempts('[]')",
        "SELECT ledger.fan_out_webhooks()",
    ):
        with pytest.raises(psycopg.Error) as err:
            conn.execute(statement)
        assert err.value.sqlstate == "42501", statement
    conn.execute("RESET ROLE")
    conn.execute("SET ROLE ledger_dispatcher")
    [claimed] = claim(conn)
    assert claimed["secret"].startswith("whsec_")
    with pytest.raises(psycopg.Error) as err:
        endpoint(conn)
    assert err.value.sqlstate == "42501"
