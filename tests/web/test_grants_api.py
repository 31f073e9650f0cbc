"""Credit grants over HTTP: POST /grants, POST /grants/{grant_id}/void,
GET /owners/{owner_id}/grants and GET /owners/{owner_id}/spending, each
against the real database, with the statuses and codes of bad input. Every
response is also checked against the served OpenAPI document (the client
fixture). The module runs on plain PostgreSQL and on the Citus cluster
(tests/conftest.py, CITUS_CONTRACT)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from flask.testing import FlaskClient

from ledger_py.client import Ledger
from ledger_py.tokens import create_api_key
from tests.web.conftest import OTHER_APP
from tests.web.helpers import bearer, error_of, fund

H = dict[str, str]


def now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def make_grant(client: FlaskClient, auth: H, key: str | None, **body: Any) -> Any:
    headers = dict(auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/grants", json=body, headers=headers)


def void(client: FlaskClient, auth: H, grant_id: int, key: str, **body: Any) -> Any:
    return client.post(
        f"/grants/{grant_id}/void", json=body, headers={**auth, "Idempotency-Key": key}
    )


def grants_of(client: FlaskClient, auth: H, owner: str, **query: str) -> list[dict[str, Any]]:
    response = client.get(f"/owners/{owner}/grants", query_string=query, headers=auth)
    assert response.status_code == 200, response.json
    assert response.json["owner_id"] == owner
    return response.json["grants"]  # type: ignore[no-any-return]


def grant_made_by(client: FlaskClient, auth: H, owner: str, entry_id: int) -> dict[str, Any]:
    [found] = [
        g
        for g in grants_of(client, auth, owner, include_closed="true")
        if g["entry_id"] == entry_id
    ]
    return found


def test_a_grant_with_an_expiry_is_listed_with_it(client: FlaskClient, auth: H) -> None:
    expires_at = (now() + timedelta(days=3)).replace(microsecond=0)
    body = {
        "owner_id": "amy",
        "operation": "PROMO_CREDIT",
        "amount": 25,
        "expires_at": rfc3339(expires_at),
        "priority": 5,
        "metadata": {"campaign": "spring"},
    }
    first = make_grant(client, auth, "promo-amy", **body)
    assert first.status_code == 201, first.json
    entry = first.json["entry"]
    assert (entry["owner_id"], entry["app"], entry["operation"], entry["amount"]) == (
        "amy",
        "example_app",
        "PROMO_CREDIT",
        25,
    )
    assert first.json["balance"] == 25
    assert "Idempotent-Replayed" not in first.headers

    again = make_grant(client, auth, "promo-amy", **body)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    error_of(
        make_grant(client, auth, "promo-amy", **{**body, "amount": 26}), 409, "idempotency_conflict"
    )

    [listed] = grants_of(client, auth, "amy")
    assert listed["entry_id"] == entry["entry_id"]
    assert (listed["amount"], listed["remaining"], listed["priority"], listed["status"]) == (
        25,
        25,
        5,
        "active",
    )
    assert datetime.fromisoformat(listed["expires_at"]) == expires_at
    assert (listed["app"], listed["operation"]) == ("example_app", "PROMO_CREDIT")

    # Omitted: the operation's own expiry (30 days) and priority (10); the nonce keys it.
    plain = make_grant(
        client, auth, None, owner_id="amy", operation="PROMO_CREDIT", amount=3, nonce="n1"
    )
    assert plain.status_code == 201
    made = grant_made_by(client, auth, "amy", plain.json["entry"]["entry_id"])
    assert made["priority"] == 10
    life = datetime.fromisoformat(made["expires_at"]) - datetime.fromisoformat(made["created_at"])
    assert life == timedelta(days=30)
    assert client.get("/balance/amy", headers=auth).json["balance"] == 28


def test_bad_grants_are_refused_with_their_codes(client: FlaskClient, auth: H) -> None:
    base = {"owner_id": "bo", "operation": "PROMO_CREDIT", "amount": 5}
    late = make_grant(client, auth, "b1", **base, expires_at=rfc3339(now() + timedelta(days=31)))
    assert error_of(late, 422, "invalid_argument")["field"] == "expires_at"
    past = make_grant(client, auth, "b2", **base, expires_at=rfc3339(now() - timedelta(hours=1)))
    assert error_of(past, 422, "invalid_argument")["field"] == "expires_at"
    priority = make_grant(client, auth, "b3", **base, priority=1001)
    assert error_of(priority, 422, "invalid_argument")["field"] == "priority"
    error_of(
        make_grant(client, auth, "b4", owner_id="bo", operation="CREDIT_SPEND", amount=5),
        422,
        "invalid_argument",
    )
    error_of(make_grant(client, auth, "b5", **{**base, "amount": 0}), 422, "invalid_amount")
    error_of(
        make_grant(client, auth, "b6", owner_id="bo", operation="OTHER_SPEND"),
        403,
        "operation_not_allowed",
    )
    error_of(
        make_grant(client, auth, "b7", owner_id="bo", operation="NO_SUCH_OP"),
        422,
        "unknown_operation",
    )
    error_of(make_grant(client, auth, None, **base), 422, "invalid_argument")  # no key
    # Shapes, before the ledger: a time without an offset, not a time, a fraction, a stray field.
    for shape in (
        {**base, "expires_at": "2030-01-01T00:00:00"},
        {**base, "expires_at": "next week"},
        {**base, "priority": 1.5},
        {**base, "priority": "high"},
        {**base, "expiry": "2030-01-01T00:00:00Z"},
        {"operation": "PROMO_CREDIT"},
    ):
        error_of(make_grant(client, auth, "shape", **shape), 422, "validation_error")
    assert grants_of(client, auth, "bo", include_closed="true") == []
    assert client.get("/balance/bo", headers=auth).json["balance"] == 0


def test_void_returns_a_negative_entry_and_the_grant_shows_voided(
    client: FlaskClient, auth: H
) -> None:
    made = make_grant(client, auth, "g", owner_id="cy", operation="PROMO_CREDIT", amount=10)
    entry_id = made.json["entry"]["entry_id"]
    client.post(
        "/ledger",
        json={"owner_id": "cy", "operation": "CREDIT_SPEND", "amount": 4},
        headers={**auth, "Idempotency-Key": "spend"},
    )
    grant_id = grant_made_by(client, auth, "cy", entry_id)["grant_id"]

    voided = void(client, auth, grant_id, "void-1", reason="duplicate promo")
    assert voided.status_code == 201, voided.json
    assert (voided.json["entry"]["amount"], voided.json["balance"]) == (-6, 0)
    assert voided.json["entry"]["owner_id"] == "cy"
    replay = void(client, auth, grant_id, "void-1", reason="duplicate promo")
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json == voided.json

    assert grants_of(client, auth, "cy") == []
    shown = grant_made_by(client, auth, "cy", entry_id)
    assert (shown["status"], shown["remaining"], shown["amount"]) == ("voided", 0, 10)
    error_of(void(client, auth, grant_id, "void-2"), 409, "grant_not_active")
    assert client.get("/balance/cy", headers=auth).json["balance"] == 0


def test_void_errors(client: FlaskClient, ledger: Ledger, tokens: dict[str, str]) -> None:
    mine, theirs = bearer(tokens["example_app"]), bearer(tokens[OTHER_APP])
    made = make_grant(client, mine, "g", owner_id="di", operation="CREDIT_ADD", amount=5)
    grant_id = grant_made_by(client, mine, "di", made.json["entry"]["entry_id"])["grant_id"]
    error_of(void(client, theirs, grant_id, "v1"), 403, "operation_not_allowed")
    body = error_of(void(client, mine, grant_id + 1000, "v2"), 404, "not_found")
    assert body["kind"] == "grant"
    error_of(void(client, mine, grant_id, "v3", owner_id="someone-else"), 404, "not_found")
    error_of(
        client.post(f"/grants/{grant_id}/void", json={}, headers=mine), 422, "invalid_argument"
    )
    error_of(void(client, mine, grant_id, "v4", reason=7), 422, "validation_error")
    error_of(void(client, mine, grant_id, "v5", unexpected=True), 422, "validation_error")
    audit = bearer(create_api_key(ledger, app="example_app", scope="audit").token)
    error_of(void(client, audit, grant_id, "v6"), 403, "forbidden")
    assert client.get(f"/grants/{grant_id}/void", headers=mine).status_code == 405
    assert client.get("/balance/di", headers=mine).json["balance"] == 5


def test_spending_says_where_credits_went(client: FlaskClient, auth: H) -> None:
    never = make_grant(client, auth, "g1", owner_id="ed", operation="CREDIT_ADD", amount=5)
    promo = make_grant(client, auth, "g2", owner_id="ed", operation="PROMO_CREDIT", amount=3)
    debit = client.post(
        "/ledger",
        json={"owner_id": "ed", "operation": "CREDIT_SPEND", "amount": 4},
        headers={**auth, "Idempotency-Key": "s1"},
    ).json["entry"]
    ids = {
        g["entry_id"]: g["grant_id"] for g in grants_of(client, auth, "ed", include_closed="true")
    }
    never_id, promo_id = ids[never.json["entry"]["entry_id"]], ids[promo.json["entry"]["entry_id"]]

    by_entry = client.get(
        "/owners/ed/spending", query_string={"entry_id": debit["entry_id"]}, headers=auth
    )
    assert by_entry.status_code == 200
    assert by_entry.json["owner_id"] == "ed"
    rows = by_entry.json["spending"]
    # PROMO_CREDIT (priority 10) is spent before CREDIT_ADD (priority 50).
    assert {(r["grant_id"], r["amount"]) for r in rows} == {(promo_id, -3), (never_id, -1)}
    assert {(r["entry_id"], r["operation"], r["owner_id"]) for r in rows} == {
        (debit["entry_id"], "CREDIT_SPEND", "ed")
    }
    by_grant = client.get(
        "/owners/ed/spending", query_string={"grant_id": never_id}, headers=auth
    ).json["spending"]
    assert [(r["entry_id"], r["amount"]) for r in by_grant] == [(debit["entry_id"], -1)]
    everything = client.get("/owners/ed/spending", headers=auth).json["spending"]
    assert len(everything) == 2
    one = client.get("/owners/ed/spending", query_string={"limit": 1}, headers=auth)
    assert len(one.json["spending"]) == 1
    assert client.get("/owners/nobody/spending", headers=auth).json["spending"] == []

    error_of(
        client.get("/owners/ed/spending", query_string={"limit": 0}, headers=auth),
        422,
        "invalid_argument",
    )
    for query in ({"entry_id": "x"}, {"grant_id": 0}, {"limit": "many"}):
        error_of(
            client.get("/owners/ed/spending", query_string=query, headers=auth),
            422,
            "validation_error",
        )
    error_of(
        client.get("/owners/" + "x" * 256 + "/spending", headers=auth), 422, "invalid_argument"
    )


def test_grants_list_query_and_errors(client: FlaskClient, auth: H) -> None:
    fund(client, auth, "flo", 4)
    [opening] = grants_of(client, auth, "flo", include_closed="false")
    assert (opening["operation"], opening["remaining"], opening["expires_at"]) == (
        "CREDIT_ADD",
        4,
        None,
    )
    assert grants_of(client, auth, "nobody") == []
    error_of(
        client.get("/owners/flo/grants", query_string={"include_closed": "maybe"}, headers=auth),
        422,
        "validation_error",
    )
    error_of(client.get("/owners/" + "x" * 256 + "/grants", headers=auth), 422, "invalid_argument")
    error_of(client.get("/owners/flo/grants"), 401, "unauthorized")


def test_expired_credits_leave_the_list_and_the_report_counts_them(
    client: FlaskClient, auth: H, ledger: Ledger
) -> None:
    start = now() - timedelta(minutes=1)
    expires_at = now() + timedelta(seconds=1)
    made = make_grant(
        client,
        auth,
        "short",
        owner_id="gil",
        operation="CREDIT_ADD",
        amount=6,
        expires_at=rfc3339(expires_at),
    )
    assert made.status_code == 201, made.json
    made_void = make_grant(client, auth, "v", owner_id="gil", operation="PROMO_CREDIT", amount=2)
    grant_id = grant_made_by(client, auth, "gil", made_void.json["entry"]["entry_id"])["grant_id"]
    assert void(client, auth, grant_id, "void").status_code == 201
    time.sleep(max(0.0, (expires_at - now()).total_seconds()) + 0.05)

    # Gone for every reader at once; the EXPIRE entry follows (ledger grants expire).
    assert grants_of(client, auth, "gil") == []
    assert client.get("/balance/gil", headers=auth).json["balance"] == 0
    assert ledger.expire_grants() == 1
    expired = grant_made_by(client, auth, "gil", made.json["entry"]["entry_id"])
    assert (expired["status"], expired["remaining"]) == ("expired", 0)
    window = {"from": start.isoformat(), "to": (now() + timedelta(minutes=1)).isoformat()}
    rows = {
        r["operation"]: r
        for r in client.get("/reports", query_string=window, headers=auth).json["rows"]
    }
    assert (rows["CREDIT_ADD"]["credited"], rows["CREDIT_ADD"]["expired"]) == (6, 6)
    assert (rows["PROMO_CREDIT"]["credited"], rows["PROMO_CREDIT"]["voided"]) == (2, 2)


def test_operations_show_expiry_and_priority(client: FlaskClient, auth: H) -> None:
    operations = {
        o["operation"]: o for o in client.get("/operations", headers=auth).json["operations"]
    }
    promo = operations["PROMO_CREDIT"]
    assert (promo["expires_after"], promo["grant_priority"]) == (30 * 86400, 10)
    assert operations["CREDIT_ADD"]["expires_after"] is None
