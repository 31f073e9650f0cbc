"""The fan-out of the event feed into webhook deliveries, and retention.

Real events (entries posted through the SQL API), the feed's cursor read
through list_events by fan_out_webhooks; plain PostgreSQL and the Citus
cluster (CITUS_CONTRACT), where the feed and the webhook tables live on the
coordinator and the outbox on the workers.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from .helpers import call, one, post


def endpoint(conn, app="core", **params) -> dict[str, Any]:
    return one(conn, "create_webhook_endpoint", app=app, url="https://example.com/hook", **params)


def fan_out(conn, max_rows: int = 500) -> int:
    return int(one(conn, "fan_out_webhooks", max_rows=max_rows)["fan_out_webhooks"])


def bodies(conn, endpoint_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT webhook_id, body FROM ledger.webhook_deliveries WHERE endpoint_id = %s"
        " ORDER BY delivery_id",
        (endpoint_id,),
    ).fetchall()
    found = []
    for webhook_id, body in rows:
        parsed = json.loads(body)
        assert webhook_id == f"evt_{parsed['data']['event_id']}"
        found.append(parsed)
    return found


def scalar(conn, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def test_an_endpoint_gets_the_events_after_its_registration(conn):
    post(conn, "before", "CREDIT_ADD", "b1", amount=5)
    everything = endpoint(conn)["endpoint_id"]
    holds_only = endpoint(conn, event_types=["hold.created"])["endpoint_id"]
    credit = post(conn, "alice", "CREDIT_ADD", "a1", amount=50, metadata='{"order": 7}')
    one(conn, "create_hold", owner_id="alice", app="core", operation="CREDIT_SPEND",
        idempotency_key="h1", amount=5)
    assert fan_out(conn) == 4  # two events, read for each endpoint
    assert fan_out(conn) == 0  # every endpoint is up to date
    sent = bodies(conn, everything)
    assert [b["type"] for b in sent] == ["entry.posted", "hold.created"]
    first = sent[0]
    assert first["data"]["entry_id"] == credit["entry_id"]
    assert first["data"]["owner_id"] == "alice" and first["data"]["seq"] == 1
    assert first["data"]["payload"]["metadata"] == {"order": 7}  # the app's own entry
    assert first["timestamp"] == first["data"]["occurred_at"] and first["timestamp"].endswith("Z")
    assert [b["type"] for b in bodies(conn, holds_only)] == ["hold.created"]


def test_another_apps_metadata_stays_out_of_the_body(conn):
    theirs = endpoint(conn, app="example_app")["endpoint_id"]
    post(conn, "alice", "CREDIT_ADD", "a1", amount=50, metadata='{"secret": "core only"}')
    fan_out(conn)
    [sent] = bodies(conn, theirs)
    assert "metadata" not in sent["data"]["payload"]
    assert "idempotency_key" not in sent["data"]["payload"]


def test_a_late_commit_is_still_fanned_out(db_url, conn):
    """A transaction that holds its event while others commit: the fan-out
    passes the others, and the late event still gets its delivery."""
    endpoint_id = endpoint(conn)["endpoint_id"]
    post(conn, "early", "CREDIT_ADD", "e0", amount=1)
    with psycopg.connect(db_url) as slow:
        slow.execute(
            "SELECT * FROM ledger.post_entry(owner_id => 'slow', app => 'core',"
            " operation => 'CREDIT_ADD', idempotency_key => 's1', amount => 1)"
        )
        for i in range(3):
            post(conn, f"fast{i}", "CREDIT_ADD", f"f{i}", amount=1)
        fan_out(conn)
        assert {b["data"]["owner_id"] for b in bodies(conn, endpoint_id)} == {
            "early", "fast0", "fast1", "fast2"
        }
        slow.commit()
    fan_out(conn)
    sent = [b["data"]["owner_id"] for b in bodies(conn, endpoint_id)]
    assert sorted(sent) == ["early", "fast0", "fast1", "fast2", "slow"]
    assert len(set(sent)) == len(sent)


def test_concurrent_fan_outs_write_each_delivery_once(db_url, conn):
    endpoints = [endpoint(conn)["endpoint_id"] for _ in range(3)]
    for i in range(60):
        post(conn, f"o{i % 7}", "CREDIT_ADD", f"k{i}", amount=1)
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as mine:
                start.wait()
                while fan_out(mine, max_rows=7):
                    pass
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    fan_out(conn)  # whatever a worker left while another held an endpoint
    for endpoint_id in endpoints:
        events = [b["data"]["event_id"] for b in bodies(conn, endpoint_id)]
        assert len(events) == 60 and len(set(events)) == 60


def test_a_disabled_endpoint_resumes_where_it_stopped(conn):
    endpoint_id = endpoint(conn)["endpoint_id"]
    post(conn, "a", "CREDIT_ADD", "1", amount=1)
    fan_out(conn)
    one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=False)
    post(conn, "a", "CREDIT_ADD", "2", amount=1)
    assert fan_out(conn) == 0
    assert len(bodies(conn, endpoint_id)) == 1
    one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=True)
    assert fan_out(conn) == 1
    assert [b["data"]["seq"] for b in bodies(conn, endpoint_id)] == [1, 2]


# ---- retention ----------------------------------------------------------------------------------


def feed(conn) -> int:
    return int(scalar(conn, "SELECT count(*) FROM ledger.event_feed"))


def outbox(conn) -> int:
    return int(scalar(conn, "SELECT count(*) FROM ledger.events"))


def prune(conn, function="prune_events", older_than=timedelta(0), max_rows=1000) -> int:
    return int(one(conn, function, older_than=older_than, max_rows=max_rows)[function])


def test_events_older_than_the_window_are_pruned_in_small_transactions(conn):
    for i in range(5):
        post(conn, "a", "CREDIT_ADD", str(i), amount=1)
    call(conn, "list_events", app="core")  # relays them
    assert prune(conn, older_than=timedelta(days=30)) == 0  # all inside the default window
    assert prune(conn, max_rows=2) == 2
    assert prune(conn, max_rows=2) == 2
    assert prune(conn, max_rows=2) == 1
    assert (feed(conn), outbox(conn)) == (0, 0)
    post(conn, "a", "CREDIT_ADD", "later", amount=1)
    # Not relayed yet: never pruned.
    assert prune(conn) == 0 and outbox(conn) == 1


def test_an_active_endpoint_holds_back_what_it_has_not_fanned_out(conn):
    endpoint_id = endpoint(conn)["endpoint_id"]
    for i in range(3):
        post(conn, "a", "CREDIT_ADD", str(i), amount=1)
    call(conn, "list_events", app="core")
    assert prune(conn) == 0  # all after the endpoint's cursor
    fan_out(conn, max_rows=2)
    assert prune(conn) == 2  # the two it fanned out
    # Disabled, it holds nothing back (it resumes with what is still kept).
    one(conn, "set_webhook_endpoint_active", endpoint_id=endpoint_id, app="core", active=False)
    assert prune(conn) == 1
    assert feed(conn) == 0
    # The deliveries keep their bodies: pruning events loses none.
    assert len(bodies(conn, endpoint_id)) == 2


def test_finished_deliveries_are_pruned_pending_ones_never(conn):
    endpoint_id = endpoint(conn)["endpoint_id"]
    for i in range(3):
        post(conn, "a", "CREDIT_ADD", str(i), amount=1)
    fan_out(conn)
    claimed = call(conn, "claim_webhook_deliveries", max_rows=2, lease=timedelta(seconds=30))
    one(
        conn,
        "record_webhook_attempts",
        outcomes=json.dumps(
            [{"delivery_id": claimed[0]["delivery_id"], "attempt": 1, "ok": True},
             {"delivery_id": claimed[1]["delivery_id"], "attempt": 1, "ok": False}]
        ),
    )
    assert prune(conn, "prune_webhook_deliveries", older_than=timedelta(days=30)) == 0
    assert prune(conn, "prune_webhook_deliveries") == 2
    left = call(conn, "list_webhook_deliveries", endpoint_id=endpoint_id)
    assert [d["status"] for d in left] == ["pending"]
    assert scalar(conn, "SELECT count(*) FROM ledger.webhook_attempts") == 0


@pytest.mark.parametrize("function", ["prune_events", "prune_webhook_deliveries"])
@pytest.mark.parametrize(
    ("params", "field"),
    [({"older_than": timedelta(seconds=-1)}, "older_than"), ({"max_rows": 0}, "max_rows")],
)
def test_prune_arguments_out_of_range_are_lg007(conn, function, params, field):
    with pytest.raises(psycopg.Error) as err:
        one(conn, function, **params)
    assert err.value.sqlstate == "LG007"
    assert json.loads(err.value.diag.message_detail)["field"] == field
