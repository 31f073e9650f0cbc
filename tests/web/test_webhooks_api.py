"""GET /events and the /webhooks resources against a real database; every
response is checked against the served OpenAPI document (the client
fixture). The app is the API key's: another app's endpoint is 404."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from flask.testing import FlaskClient

from ledger_py.client import Ledger
from ledger_py.tokens import create_api_key
from tests.web.helpers import bearer, error_of, fund

H = dict[str, str]


def register(client: FlaskClient, auth: H, **body: Any) -> dict[str, Any]:
    response = client.post("/webhooks", json={"url": "https://example.com/hook", **body}, headers=auth)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def test_events_follow_the_cursor_page_by_page(client: FlaskClient, auth: H) -> None:
    empty = client.get("/events", headers=auth)
    assert empty.status_code == 200 and empty.json == {"events": [], "next_cursor": None}
    for amount in (1, 2, 3):
        fund(client, auth, "alice", amount)
    first = client.get("/events?limit=2", headers=auth).json
    assert [e["payload"]["amount"] for e in first["events"]] == [1, 2]
    assert first["events"][0]["type"] == "entry.posted" and first["events"][0]["seq"] == 1
    assert first["next_cursor"] == first["events"][-1]["cursor"]
    second = client.get("/events", query_string={"after": first["next_cursor"]}, headers=auth).json
    assert [e["payload"]["amount"] for e in second["events"]] == [3]
    # Nothing new: the same cursor comes back, to poll with.
    again = client.get("/events", query_string={"after": second["next_cursor"]}, headers=auth).json
    assert again == {"events": [], "next_cursor": second["next_cursor"]}


def test_events_leave_out_another_apps_metadata(
    client: FlaskClient, auth: H, tokens: dict[str, str]
) -> None:
    response = client.post(
        "/ledger",
        json={"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5, "metadata": {"a": 1}},
        headers={**auth, "Idempotency-Key": "m1"},
    )
    assert response.status_code == 201
    [mine] = client.get("/events", headers=auth).json["events"]
    assert mine["payload"]["metadata"] == {"a": 1}
    [theirs] = client.get("/events", headers=bearer(tokens["core"])).json["events"]
    assert "metadata" not in theirs["payload"] and "idempotency_key" not in theirs["payload"]


def test_bad_cursor_or_limit_is_422(client: FlaskClient, auth: H) -> None:
    error_of(client.get("/events?after=42", headers=auth), 422, "invalid_argument")
    error_of(client.get("/events?limit=0", headers=auth), 422, "invalid_argument")
    error_of(client.get("/events?limit=x", headers=auth), 422, "validation_error")
    error_of(client.get("/events"), 401, "unauthorized")


def test_register_list_get_disable_enable_delete(client: FlaskClient, auth: H) -> None:
    created = register(client, auth, event_types=["hold.created", "entry.posted"], description="d")
    endpoint = created["endpoint"]
    assert created["secret"].startswith("whsec_")
    assert endpoint["app"] == "example_app" and endpoint["event_types"] == [
        "entry.posted",
        "hold.created",
    ]
    endpoint_id = endpoint["endpoint_id"]
    listed = client.get("/webhooks", headers=auth).json["endpoints"]
    assert listed == [endpoint] and "whsec_" not in json.dumps(listed)
    assert client.get(f"/webhooks/{endpoint_id}", headers=auth).json == {"endpoint": endpoint}
    off = client.post(f"/webhooks/{endpoint_id}/disable", headers=auth)
    assert off.status_code == 200 and off.json["endpoint"]["active"] is False
    on = client.post(f"/webhooks/{endpoint_id}/enable", headers=auth)
    assert on.status_code == 200 and on.json["endpoint"]["active"] is True
    gone = client.delete(f"/webhooks/{endpoint_id}", headers=auth)
    assert gone.status_code == 200 and gone.json["endpoint"]["endpoint_id"] == endpoint_id
    error_of(client.get(f"/webhooks/{endpoint_id}", headers=auth), 404, "not_found")
    assert client.get("/webhooks", headers=auth).json == {"endpoints": []}


def test_another_apps_endpoint_is_404(
    client: FlaskClient, auth: H, tokens: dict[str, str]
) -> None:
    endpoint_id = register(client, auth)["endpoint"]["endpoint_id"]
    other = bearer(tokens["core"])
    for method, path in [
        ("get", f"/webhooks/{endpoint_id}"),
        ("delete", f"/webhooks/{endpoint_id}"),
        ("post", f"/webhooks/{endpoint_id}/disable"),
        ("get", f"/webhooks/{endpoint_id}/deliveries"),
        ("get", f"/webhooks/{endpoint_id}/attempts"),
    ]:
        error_of(getattr(client, method)(path, headers=other), 404, "not_found")
    assert client.get("/webhooks", headers=other).json == {"endpoints": []}
    assert client.get(f"/webhooks/{endpoint_id}", headers=auth).json["endpoint"]["active"]


def test_bad_registrations_are_422_and_write_nothing(
    client: FlaskClient, auth: H, db_url: str
) -> None:
    for body, field in [
        ({"url": "ftp://example.com"}, "url"),
        ({"url": "https://example.com", "event_types": []}, "event_types"),
        ({"url": "https://example.com", "event_types": ["entry.psoted"]}, "event_types"),
        ({"url": "https://example.com", "description": "x" * 256}, "description"),
    ]:
        body_of = error_of(client.post("/webhooks", json=body, headers=auth), 422, "invalid_argument")
        assert body_of["field"] == field
    error_of(client.post("/webhooks", json={}, headers=auth), 422, "validation_error")
    error_of(
        client.post("/webhooks", json={"url": "https://example.com", "secret": "mine"}, headers=auth),
        422,
        "validation_error",
    )
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM ledger.webhook_endpoints").fetchone()
    assert row == (0,)


def test_an_audit_key_reads_every_apps_endpoints_and_writes_none(
    client: FlaskClient, auth: H, ledger: Ledger
) -> None:
    register(client, auth)
    audit = bearer(create_api_key(ledger, app="core", scope="audit").token)
    assert len(client.get("/webhooks", headers=audit).json["endpoints"]) == 1
    error_of(client.post("/webhooks", json={"url": "https://example.com"}, headers=audit), 403, "forbidden")


def test_deliveries_attempts_and_resend(client: FlaskClient, auth: H, db_url: str) -> None:
    endpoint_id = register(client, auth)["endpoint"]["endpoint_id"]
    fund(client, auth, "alice", 5)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT ledger.fan_out_webhooks()")
        [(delivery_id, event_id)] = conn.execute(
            "SELECT delivery_id, event_id FROM ledger.webhook_deliveries"
        ).fetchall()
        conn.execute("SELECT * FROM ledger.claim_webhook_deliveries(10, interval '30 s')")
        conn.execute(
            "SELECT ledger.record_webhook_attempts(%s)",
            (json.dumps([{"delivery_id": delivery_id, "attempt": 1, "ok": True, "status_code": 200}]),),
        )
    deliveries = client.get(f"/webhooks/{endpoint_id}/deliveries", headers=auth).json
    assert deliveries["next_before_id"] is None
    [delivered] = deliveries["deliveries"]
    assert (delivered["event_id"], delivered["status"], delivered["webhook_id"]) == (
        event_id,
        "delivered",
        f"evt_{event_id}",
    )
    error_of(
        client.get(f"/webhooks/{endpoint_id}/deliveries?status=done", headers=auth),
        422,
        "invalid_argument",
    )
    [attempt] = client.get(f"/webhooks/{endpoint_id}/attempts", headers=auth).json["attempts"]
    assert (attempt["outcome"], attempt["status_code"]) == ("delivered", 200)
    resent = client.post("/webhooks/resend", json={"event_id": event_id}, headers=auth)
    assert resent.status_code == 200
    assert [(d["status"], d["attempts"]) for d in resent.json["deliveries"]] == [("pending", 1)]
    error_of(client.post("/webhooks/resend", json={"event_id": 10**12}, headers=auth), 404, "not_found")


def test_an_id_out_of_range_is_404_for_every_method(client: FlaskClient, auth: H) -> None:
    """GET and DELETE share one routing rule: werkzeug answered 405 to the DELETE
    of an id over 2**63 - 1 when each method had a rule of its own."""
    huge = f"/webhooks/{2**63}"
    assert client.get(huge, headers=auth).status_code == 404
    assert client.delete(huge, headers=auth).status_code == 404
