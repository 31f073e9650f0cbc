"""ledger.metrics_snapshot(): the figures GET /metrics reads at scrape time
follow the event and webhook backlogs, and a ledger_reader may read them.
Plain PostgreSQL and the Citus cluster (CITUS_CONTRACT): events and accounts
are distributed there, the feed and the webhook tables stay on the coordinator."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from .helpers import call, login_member, one, post


def snapshot(conn: psycopg.Connection[Any], **params: Any) -> dict[str, Any]:
    row = one(conn, "metrics_snapshot", **params)
    del row["measured_at"]
    return row


def test_figures_follow_the_backlogs(conn):
    call(conn, "relay_events")
    one(conn, "create_webhook_endpoint", app="core", url="https://example.com/hook")
    start = snapshot(conn)
    assert start == {**start, "events_unrelayed": 0, "fan_out_lag": 0, "deliveries_pending": 0}

    post(conn, "m1", "CREDIT_ADD", "k1", amount=5)
    post(conn, "m2", "CREDIT_ADD", "k2", amount=5)
    assert snapshot(conn) == {**start, "events_unrelayed": 2}

    assert one(conn, "relay_events")["relay_events"] == 2
    relayed = snapshot(conn)
    position = start["feed_position"] + 2
    assert relayed == {**start, "feed_position": position, "fan_out_lag": 2}

    one(conn, "fan_out_webhooks")
    assert snapshot(conn) == {**relayed, "fan_out_lag": 0, "deliveries_pending": 2}

    claims = call(conn, "claim_webhook_deliveries", max_rows=10, lease="30 seconds")
    outcomes = [
        {
            "delivery_id": c["delivery_id"],
            "attempt": 1,
            "ok": i == 0,
            "status_code": 200 if i == 0 else 410,
        }
        for i, c in enumerate(claims)
    ]
    # A failed attempt without a retry time ends its delivery as failed.
    conn.execute("SELECT ledger.record_webhook_attempts(%s)", (json.dumps(outcomes),))
    assert snapshot(conn) == {
        **relayed,
        "fan_out_lag": 0,
        "deliveries_delivered_recent": 1,
        "deliveries_failed_recent": 1,
    }


def test_a_reader_may_call_it_and_the_window_is_bounded(conn):
    role = login_member(conn, "ledger_reader")
    conn.execute(f"SET ROLE {role}")
    try:
        assert snapshot(conn)["events_unrelayed"] >= 0
        for recent in ("0 seconds", "2 days", None):
            with pytest.raises(psycopg.Error) as error:
                one(conn, "metrics_snapshot", recent=recent)
            assert error.value.sqlstate == "LG007"
    finally:
        conn.execute("RESET ROLE")
