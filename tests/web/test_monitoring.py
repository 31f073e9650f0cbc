"""GET /metrics and the JSON request log (web/monitoring.py), in one process
(the Flask test client on a real database); test_monitoring_gunicorn.py
serves them with two gunicorn workers."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from ledger_py.client import Ledger
from tests.web.helpers import fund
from web import close_app, create_app
from web.monitoring import JsonFormatter, request_log

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: FlaskClient, headers: dict[str, str] | None = None) -> Samples:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    """The request log's lines as JSON, as the service writes them."""
    seen: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(json.loads(self.format(record)))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    level = request_log.level
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    yield seen
    request_log.removeHandler(handler)
    request_log.setLevel(level)


def test_figures_move_with_requests_by_route_status_and_code(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    fund(client, auth, "alice", 5)
    before = scrape(client)
    ok = client.post(
        "/ledger",
        json={"owner_id": "alice", "operation": "CREDIT_SPEND", "amount": 2},
        headers={**auth, "Idempotency-Key": "spend-1"},
    )
    short = client.post(
        "/ledger",
        json={"owner_id": "alice", "operation": "CREDIT_SPEND", "amount": 50},
        headers={**auth, "Idempotency-Key": "spend-2"},
    )
    missing = client.get("/entries/999999", headers=auth)
    nowhere = client.get("/no/such/route")
    assert [r.status_code for r in (ok, short, missing, nowhere)] == [201, 402, 404, 404]
    after = scrape(client)

    requests = "ledger_http_requests_total"
    assert moved(before, after, requests, method="POST", route="/ledger", status="201") == 1
    assert moved(before, after, requests, method="POST", route="/ledger", status="402") == 1
    assert (
        moved(before, after, requests, method="GET", route="/entries/<int:entry_id>", status="404")
        == 1
    )
    assert moved(before, after, requests, method="GET", route="unmatched", status="404") == 1
    # The first scrape itself is counted (the second one answers before it counts).
    assert moved(before, after, requests, method="GET", route="/metrics", status="200") == 1
    # The raw path never becomes a label.
    assert not any("999999" in v or "alice" in v for (_, labels) in after for _, v in labels)

    latency = "ledger_http_request_duration_seconds"
    assert moved(before, after, f"{latency}_count", method="POST", route="/ledger") == 2
    assert moved(before, after, f"{latency}_bucket", method="POST", route="/ledger", le="+Inf") == 2
    assert moved(before, after, f"{latency}_sum", method="POST", route="/ledger") > 0

    errors = "ledger_http_errors_total"
    assert moved(before, after, errors, code="insufficient_credits") == 1
    assert moved(before, after, errors, code="not_found") == 2  # the entry and the route

    calls = "ledger_call_duration_seconds_count"
    assert moved(before, after, calls, function="post_entry") == 2
    assert moved(before, after, calls, function="get_entry") == 1
    assert moved(before, after, calls, function="api_key_lookup") == 3

    # The pool the app uses (the fixture's: at most 8 connections).
    assert value(after, "ledger_pool_max") == 8
    assert value(after, "ledger_pool_size") >= 1
    assert value(after, "ledger_pool_requests_total") > value(before, "ledger_pool_requests_total")


def test_request_log_line_and_request_id_round_trip(
    client: FlaskClient, auth: dict[str, str], tokens: dict[str, str], lines: list[dict[str, Any]]
) -> None:
    fund(client, auth, "bob", 3)
    lines.clear()
    response = client.post(
        "/ledger",
        json={"owner_id": "bob", "operation": "CREDIT_SPEND", "amount": 1},
        headers={**auth, "Idempotency-Key": "bob-1", "X-Request-Id": "edge-7f3a:91.b_c"},
    )
    assert response.status_code == 201
    assert response.headers["X-Request-Id"] == "edge-7f3a:91.b_c"
    [line] = lines
    assert set(line) == {
        "time", "level", "logger", "request_id", "method", "route", "status", "duration_ms",
        "app", "ledger_fn", "ledger_ms", "db_calls", "db_ms",
    }  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert (line["level"], line["logger"], line["request_id"]) == (
        "info",
        "ledger.requests",
        "edge-7f3a:91.b_c",
    )
    assert (line["method"], line["route"], line["status"], line["app"]) == (
        "POST",
        "/ledger",
        201,
        "example_app",
    )
    # The view's call, and every call of the request (the key lookup first).
    assert (line["ledger_fn"], line["db_calls"]) == ("post_entry", 2)
    assert 0 < line["ledger_ms"] <= line["db_ms"] <= line["duration_ms"]

    # An id that is not well formed (or none) is replaced by a new one.
    for sent in ("has space", "x" * 129, "tab\tinside", None):
        lines.clear()
        headers = {**auth} if sent is None else {**auth, "X-Request-Id": sent}
        response = client.get("/balance/bob", headers=headers)
        made = response.headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made), made
        [line] = lines
        assert (line["request_id"], line["route"], line["ledger_fn"]) == (
            made,
            "/balance/<path:owner_id>",
            "get_balance",
        )

    # An error: its code; no secret, path, body or query in any line.
    lines.clear()
    refused = client.get(
        "/balance/bob?x=secret-query", headers={"Authorization": "Bearer lgk_nope"}
    )
    assert refused.status_code == 401
    [line] = lines
    assert (line["status"], line["code"], line["route"]) == (
        401,
        "unauthorized",
        "/balance/<path:owner_id>",
    )
    assert "app" not in line
    lines.clear()
    client.post(
        "/ledger",
        json={
            "owner_id": "bob",
            "operation": "CREDIT_SPEND",
            "amount": 1,
            "metadata": {"card": "4242"},
        },
        headers={**auth, "Idempotency-Key": "bob-2"},
    )
    written = json.dumps(lines)
    for secret in (
        tokens["example_app"],
        auth["Authorization"],
        "lgk_nope",
        "secret-query",
        "4242",
        "bob-2",
    ):
        assert secret not in written


def test_the_metrics_token_guards_the_scrape_when_set(ledger: Ledger) -> None:
    app = create_app({"LEDGER": ledger, "TESTING": True, "LEDGER_METRICS_TOKEN": "scrape-me"})
    try:
        client = app.test_client()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401 and response.json["code"] == "unauthorized"
        assert (
            "ledger_http_requests_total"
            in scrape(client, {"Authorization": "Bearer scrape-me"}).__repr__()
        )
    finally:
        close_app(app)


@pytest.fixture
def fresh_app(ledger: Ledger) -> Iterator[APIFlask]:
    """An app that reads the database at every scrape (no caching interval)."""
    app = create_app({"LEDGER": ledger, "TESTING": True, "LEDGER_METRICS_DB_INTERVAL": 0})
    yield app
    close_app(app)


def test_database_figures_follow_the_event_and_webhook_backlogs(
    fresh_app: APIFlask, ledger: Ledger, db_url: str
) -> None:
    client = fresh_app.test_client()
    ledger.relay_events()
    endpoint = ledger.create_webhook_endpoint(app="example_app", url="https://example.com/hook")
    start = scrape(client)
    assert value(start, "ledger_metrics_database_up") == 1
    assert value(start, "ledger_events_unrelayed") == 0
    assert value(start, "ledger_webhook_deliveries_pending") == 0

    ledger.post_entry(
        owner_id="carol", app="example_app", operation="CREDIT_ADD", idempotency_key="c1", amount=4
    )
    written = scrape(client)
    assert value(written, "ledger_events_unrelayed") == 1  # entry.posted
    assert value(written, "ledger_event_feed_position") == value(
        start, "ledger_event_feed_position"
    )

    assert ledger.relay_events() == 1
    relayed = scrape(client)
    assert value(relayed, "ledger_events_unrelayed") == 0
    assert (
        value(relayed, "ledger_event_feed_position")
        == value(start, "ledger_event_feed_position") + 1
    )
    assert value(relayed, "ledger_webhook_fan_out_lag") == 1

    assert ledger.fan_out_webhooks() == 1
    fanned = scrape(client)
    assert value(fanned, "ledger_webhook_fan_out_lag") == 0
    assert value(fanned, "ledger_webhook_deliveries_pending") == 1
    assert value(fanned, "ledger_webhook_deliveries_recent", result="delivered") == 0

    [claim] = ledger.claim_webhook_deliveries(max_rows=10, lease=timedelta(seconds=30))
    assert claim.endpoint_id == endpoint.endpoint_id
    ledger.record_webhook_attempts(
        outcomes=[{"delivery_id": claim.delivery_id, "attempt": 1, "ok": True, "status_code": 200}]
    )
    delivered = scrape(client)
    assert value(delivered, "ledger_webhook_deliveries_pending") == 0
    assert value(delivered, "ledger_webhook_deliveries_recent", result="delivered") == 1
    assert value(delivered, "ledger_webhook_deliveries_recent", result="failed") == 0

    # A grant past its expiry: due until expire_grants writes it off, then counted as expired.
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    ledger.grant_credits(
        owner_id="dave",
        app="core",
        operation="PROMO_CREDIT",
        idempotency_key="d1",
        amount=3,
        expires_at=soon,
    )
    time.sleep(max(0.0, (soon - datetime.now(timezone.utc)).total_seconds()) + 0.05)
    due = scrape(client)
    assert value(due, "ledger_expiry_due_owners") == 1
    assert value(due, "ledger_grants_expired_recent") == 0
    assert ledger.expire_grants() == 1
    ledger.relay_events()
    expired = scrape(client)
    assert value(expired, "ledger_expiry_due_owners") == 0
    assert value(expired, "ledger_grants_expired_recent") == 1


def test_database_figures_are_read_at_most_once_per_interval(
    client: FlaskClient, ledger: Ledger
) -> None:
    first = scrape(client)
    ledger.post_entry(
        owner_id="erin", app="example_app", operation="CREDIT_ADD", idempotency_key="e1", amount=1
    )
    # The default interval (5 s): the second scrape reuses the first one's figures.
    assert value(scrape(client), "ledger_events_unrelayed") == value(
        first, "ledger_events_unrelayed"
    )


def test_an_unreachable_database_reads_as_down_and_the_scrape_still_answers(
    fresh_app: APIFlask, db_url: str
) -> None:
    client = fresh_app.test_client()
    assert value(scrape(client), "ledger_metrics_database_up") == 1
    # A table the query reads, locked: the scrape's statement timeout (2 s) ends the wait.
    with psycopg.connect(db_url, autocommit=True) as locker:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE ledger.webhook_endpoints IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        samples = scrape(client)
        assert time.monotonic() - started < 5
        locker.execute("ROLLBACK")
    assert value(samples, "ledger_metrics_database_up") == 0
    assert "ledger_events_unrelayed" not in {name for name, _ in samples}
    assert (
        value(samples, "ledger_http_requests_total", method="GET", route="/metrics", status="200")
        >= 1
    )
