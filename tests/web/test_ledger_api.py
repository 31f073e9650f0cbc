"""The ledger's HTTP resources: every endpoint, and every error status with
the input that causes it. Each response is also checked against the served
OpenAPI document by the client fixture."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask.testing import FlaskClient

from ledger_py.client import Ledger
from ledger_py.errors import InvalidArgument
from ledger_py.tokens import create_api_key
from tests.web.conftest import OTHER_APP
from tests.web.helpers import bearer, error_of, fund
from web import close_app, create_app

H = dict[str, str]


def post(client: FlaskClient, auth: H, key: str | None, **body: Any) -> Any:
    headers = dict(auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/ledger", json=body, headers=headers)


# ---- health --------------------------------------------------------------------------------


def test_health_reports_the_database(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "healthy", "database": "ok"}


def test_unreachable_database_is_503() -> None:
    # A port nothing listens on: the pool cannot connect within its timeout.
    down = Ledger("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1", timeout=0.5)
    app = create_app({"LEDGER": down, "TESTING": True})
    try:
        client = app.test_client()
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json["status"] == "unhealthy" and health.json["code"] == "ledger_unavailable"
        balance = client.get("/balance/alice", headers=bearer("lgk_whatever"))
        error_of(balance, 503, "ledger_unavailable")
    finally:
        close_app(app)
        down.close()


# ---- entries and balances ------------------------------------------------------------------


def test_post_entry_then_balance_and_aliases(client: FlaskClient, auth: H) -> None:
    first = post(client, auth, "k1", owner_id="alice", operation="CREDIT_ADD", amount=20)
    assert first.status_code == 201
    assert first.json["balance"] == 20
    assert first.json["entry"]["amount"] == 20
    assert first.json["entry"]["app"] == "example_app"
    assert "Idempotent-Replayed" not in first.headers

    alias = client.post(
        "/ledger/entry",
        json={"owner_id": "alice", "operation": "CREDIT_SPEND", "amount": 5},
        headers={**auth, "Idempotency-Key": "k2"},
    )
    assert alias.status_code == 201 and alias.json["balance"] == 15
    assert alias.json["entry"]["amount"] == -5

    for path in ("/balance/alice", "/ledger/alice/balance"):
        balance = client.get(path, headers=auth)
        assert balance.status_code == 200
        assert balance.json["balance"] == 15 and balance.json["available"] == 15
    unknown = client.get("/balance/nobody", headers=auth)
    assert unknown.json == {
        "owner_id": "nobody",
        "balance": 0,
        "held": 0,
        "available": 0,
        "updated_at": None,
    }


def test_replay_returns_the_original_body_and_conflict_is_409(client: FlaskClient, auth: H) -> None:
    first = post(client, auth, "same", owner_id="bob", operation="CREDIT_ADD", amount=7)
    fund(client, auth, "bob", 3)  # the balance moves on; the replay still shows the original
    again = post(client, auth, "same", owner_id="bob", operation="CREDIT_ADD", amount=7)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    conflict = post(client, auth, "same", owner_id="bob", operation="CREDIT_ADD", amount=8)
    body = error_of(conflict, 409, "idempotency_conflict")
    assert body["idempotency_key"] == "same"
    assert client.get("/balance/bob", headers=auth).json["balance"] == 10


def test_nonce_body_field_is_the_idempotency_key(client: FlaskClient, auth: H) -> None:
    first = post(
        client, auth, None, owner_id="carol", operation="CREDIT_ADD", amount=2, nonce="n-1"
    )
    assert first.status_code == 201
    by_header = post(client, auth, "n-1", owner_id="carol", operation="CREDIT_ADD", amount=2)
    assert by_header.status_code == 200 and by_header.json == first.json
    differ = post(
        client, auth, "n-2", owner_id="carol", operation="CREDIT_ADD", amount=2, nonce="n-1"
    )
    error_of(differ, 422, "invalid_argument")
    missing = post(client, auth, None, owner_id="carol", operation="CREDIT_ADD", amount=2)
    assert error_of(missing, 422, "invalid_argument")["field"] == "idempotency_key"


def test_idempotency_keys_are_per_app(client: FlaskClient, tokens: dict[str, str]) -> None:
    example = bearer(tokens["example_app"])
    core = bearer(tokens["core"])
    a = post(client, example, "shared", owner_id="dan", operation="CREDIT_ADD", amount=1)
    b = post(client, core, "shared", owner_id="dan", operation="CREDIT_ADD", amount=2)
    assert (a.status_code, b.status_code) == (201, 201)
    assert b.json["entry"]["app"] == "core" and b.json["balance"] == 3


def test_ledger_errors_map_to_statuses(client: FlaskClient, auth: H) -> None:
    fund(client, auth, "erin", 3)
    body = error_of(
        post(client, auth, "e1", owner_id="erin", operation="CREDIT_SPEND", amount=10),
        402,
        "insufficient_credits",
    )
    assert (body["owner_id"], body["needed"], body["available"]) == ("erin", 10, 3)
    error_of(
        post(client, auth, "e2", owner_id="erin", operation="NO_SUCH_OP"), 422, "unknown_operation"
    )
    error_of(
        post(client, auth, "e3", owner_id="erin", operation="CREDIT_ADD", amount=0),
        422,
        "invalid_amount",
    )
    error_of(
        post(client, auth, "e4", owner_id="erin", operation="CREDIT_ADD", amount=-5),
        422,
        "invalid_amount",
    )
    error_of(
        post(client, auth, "e5", owner_id="erin", operation="CREDIT_ADD", amount=10**30),
        422,
        "invalid_amount",
    )
    error_of(post(client, auth, "e6", owner_id="", operation="CREDIT_ADD"), 422, "invalid_argument")
    error_of(
        post(client, auth, "e7", owner_id="x" * 256, operation="CREDIT_ADD"),
        422,
        "invalid_argument",
    )
    error_of(
        post(client, auth, "e8", owner_id="a\u0000b", operation="CREDIT_ADD"),
        422,
        "invalid_argument",
    )
    error_of(
        post(client, auth, "e9", owner_id="erin", operation="CREDIT_ADD", metadata=[1, 2]),
        422,
        "invalid_argument",
    )
    error_of(
        post(
            client, auth, "e10", owner_id="erin", operation="CREDIT_ADD", metadata={"k": "\u0000"}
        ),
        422,
        "invalid_argument",
    )
    error_of(
        post(client, auth, "e11", owner_id="erin", operation="TRANSFER_OUT", amount=1),
        403,
        "operation_not_allowed",
    )
    assert post(client, auth, "e12", owner_id="erin", operation="SIGNUP_CREDIT").status_code == 201
    error_of(
        post(client, auth, "e13", owner_id="erin", operation="SIGNUP_CREDIT"),
        409,
        "operation_limit_reached",
    )
    error_of(client.get("/balance/" + "x" * 256, headers=auth), 422, "invalid_argument")
    # Nothing of the refused writes was recorded.
    assert client.get("/balance/erin", headers=auth).json["balance"] == 6


def test_shapes_are_validated_before_the_ledger(client: FlaskClient, auth: H) -> None:
    for body in (
        {"owner_id": "f"},
        {"owner_id": 5, "operation": "CREDIT_ADD"},
        {"owner_id": "f", "operation": "CREDIT_ADD", "amount": "ten"},
        {"owner_id": "f", "operation": "CREDIT_ADD", "amount": 1.5},
        {"owner_id": "f", "operation": "CREDIT_ADD", "unexpected": True},
    ):
        error_of(
            client.post("/ledger", json=body, headers={**auth, "Idempotency-Key": "s"}),
            422,
            "validation_error",
        )
    error_of(
        client.post("/ledger", json=[1, 2], headers={**auth, "Idempotency-Key": "s"}),
        422,
        "validation_error",
    )


def test_malformed_json_is_400(client: FlaskClient, auth: H) -> None:
    response = client.post(
        "/ledger",
        data='{"owner_id": ',
        headers={**auth, "Idempotency-Key": "m"},
        content_type="application/json",
    )
    error_of(response, 400, "malformed_json")


def test_body_over_4_mib_is_413_and_a_large_batch_fits(client: FlaskClient, auth: H) -> None:
    big = (
        b'{"owner_id": "g", "operation": "CREDIT_ADD", "metadata": {"x": "'
        + b"y" * (4 * 1024 * 1024)
        + b'"}}'
    )
    response = client.post(
        "/ledger",
        data=big,
        headers={**auth, "Idempotency-Key": "big"},
        content_type="application/json",
    )
    assert error_of(response, 413, "body_too_large")["max_bytes"] == 4 * 1024 * 1024


def test_missing_or_bad_api_key_is_401(client: FlaskClient, tokens: dict[str, str]) -> None:
    error_of(client.get("/balance/alice"), 401, "unauthorized")
    error_of(client.get("/balance/alice", headers=bearer("lgk_not-a-key")), 401, "unauthorized")
    error_of(
        client.get("/balance/alice", headers={"Authorization": "Basic abc"}), 401, "unauthorized"
    )
    error_of(
        client.get("/balance/alice", headers=bearer(tokens["core"] + "x")), 401, "unauthorized"
    )


def test_unknown_route_and_method(client: FlaskClient, auth: H) -> None:
    error_of(client.get("/nowhere", headers=auth), 404, "not_found")
    error_of(client.get("/entries/99999999999999999999999", headers=auth), 404, "not_found")
    error_of(client.delete("/ledger", headers=auth), 405, "method_not_allowed")


def test_two_apps_cannot_use_each_others_operations(
    client: FlaskClient, tokens: dict[str, str]
) -> None:
    example, other = bearer(tokens["example_app"]), bearer(tokens["other_app"])
    fund(client, example, "hal", 10)
    body = error_of(
        post(client, example, "x1", owner_id="hal", operation="OTHER_SPEND", amount=1),
        403,
        "operation_not_allowed",
    )
    assert body["operation_app"] == "other_app"
    error_of(
        post(client, other, "x2", owner_id="hal", operation="CONTENT_ACCESS"),
        403,
        "operation_not_allowed",
    )
    assert (
        post(client, other, "x3", owner_id="hal", operation="OTHER_SPEND", amount=2).status_code
        == 201
    )
    assert (
        post(client, example, "x4", owner_id="hal", operation="CONTENT_ACCESS").status_code == 201
    )
    error_of(
        client.post("/content", json={"owner_id": "hal", "title": "t", "body": "b"}, headers=other),
        403,
        "operation_not_allowed",
    )


# ---- history -------------------------------------------------------------------------------


def test_history_keyset_pagination(client: FlaskClient, auth: H) -> None:
    for i in range(5):
        fund(client, auth, "ida", i + 1, key=f"h{i}")
    page = client.get("/owners/ida/entries?limit=2", headers=auth).json
    seen = [e["amount"] for e in page["entries"]]
    assert seen == [5, 4]
    while page["next_after_id"] is not None:
        page = client.get(
            f"/owners/ida/entries?limit=2&after_id={page['next_after_id']}", headers=auth
        ).json
        seen += [e["amount"] for e in page["entries"]]
    assert seen == [5, 4, 3, 2, 1]
    everything = client.get("/owners/ida/entries", headers=auth).json
    assert len(everything["entries"]) == 5 and everything["next_after_id"] is None
    assert everything["entries"][0]["idempotency_key"] == "h4"
    error_of(client.get("/owners/ida/entries?limit=0", headers=auth), 422, "invalid_argument")
    error_of(client.get("/owners/ida/entries?limit=abc", headers=auth), 422, "validation_error")
    error_of(
        client.get("/owners/ida/entries?after_id=99999999999999999999", headers=auth),
        422,
        "validation_error",
    )

    entry_id = everything["entries"][0]["entry_id"]
    one = client.get(f"/entries/{entry_id}", headers=auth)
    assert one.status_code == 200 and one.json["entry"]["amount"] == 5
    error_of(client.get("/entries/424242", headers=auth), 404, "not_found")


def test_another_apps_key_reads_the_rows_but_not_their_metadata_and_keys(
    client: FlaskClient, tokens: dict[str, str]
) -> None:
    """Balances and history are shared by every app; an entry's metadata and
    idempotency key are its app's: another app's key gets them as null (the
    fields stay in the answer, so every reader parses one shape)."""
    alpha, beta = bearer(tokens["example_app"]), bearer(tokens[OTHER_APP])
    written = client.post(
        "/ledger",
        json={
            "owner_id": "kim",
            "operation": "CREDIT_ADD",
            "amount": 8,
            "metadata": {"order": "private-to-example-app"},
        },
        headers={**alpha, "Idempotency-Key": "alpha-secret-key"},
    )
    assert written.status_code == 201
    entry_id = written.json["entry"]["entry_id"]
    hold = client.post(
        "/holds",
        json={"owner_id": "kim", "operation": "CREDIT_SPEND", "amount": 3},
        headers={**alpha, "Idempotency-Key": "alpha-hold-key"},
    ).json["hold"]

    theirs = client.get(f"/entries/{entry_id}", headers=beta)
    assert theirs.status_code == 200
    entry = theirs.json["entry"]
    assert (entry["amount"], entry["balance"], entry["app"]) == (8, 8, "example_app")
    assert (entry["metadata"], entry["idempotency_key"]) == (None, None)
    [listed] = client.get("/owners/kim/entries", headers=beta).json["entries"]
    assert (listed["entry_id"], listed["metadata"], listed["idempotency_key"]) == (
        entry_id,
        None,
        None,
    )
    their_hold = client.get(f"/holds/{hold['hold_id']}", headers=beta).json["hold"]
    assert their_hold["amount"] == 3 and "idempotency_key" not in their_hold
    assert [h["hold_id"] for h in client.get("/owners/kim/holds", headers=beta).json["holds"]] == [
        hold["hold_id"]
    ]
    assert client.get("/balance/kim", headers=beta).json["available"] == 5  # shared

    mine = client.get(f"/entries/{entry_id}", headers=alpha).json["entry"]
    assert mine["metadata"] == {"order": "private-to-example-app"}
    assert mine["idempotency_key"] == "alpha-secret-key"
    [own] = client.get("/owners/kim/entries", headers=alpha).json["entries"]
    assert own["metadata"] == {"order": "private-to-example-app"}


def test_an_audit_key_reads_every_apps_private_fields_and_writes_nothing(
    client: FlaskClient, ledger: Ledger, tokens: dict[str, str]
) -> None:
    alpha = bearer(tokens["example_app"])
    audit_token = create_api_key(ledger, app=OTHER_APP, label="auditor", scope="audit").token
    audit = bearer(audit_token)
    written = client.post(
        "/ledger",
        json={"owner_id": "lou", "operation": "CREDIT_ADD", "amount": 4, "metadata": {"a": 1}},
        headers={**alpha, "Idempotency-Key": "alpha-k"},
    ).json["entry"]
    entry = client.get(f"/entries/{written['entry_id']}", headers=audit).json["entry"]
    assert (entry["metadata"], entry["idempotency_key"]) == ({"a": 1}, "alpha-k")
    [listed] = client.get("/owners/lou/entries", headers=audit).json["entries"]
    assert listed["metadata"] == {"a": 1}
    refused = client.post(
        "/ledger",
        json={"owner_id": "lou", "operation": "CREDIT_ADD", "amount": 4},
        headers={**audit, "Idempotency-Key": "audit-k"},
    )
    error_of(refused, 403, "forbidden")
    assert client.get("/balance/lou", headers=alpha).json["balance"] == 4
    with pytest.raises(InvalidArgument):
        create_api_key(ledger, app=OTHER_APP, scope="admin")


# ---- holds -----------------------------------------------------------------------------------


def test_hold_create_capture_release(client: FlaskClient, auth: H) -> None:
    fund(client, auth, "jo", 10)
    created = client.post(
        "/holds",
        json={"owner_id": "jo", "operation": "CREDIT_SPEND", "amount": 6},
        headers={**auth, "Idempotency-Key": "hold-1"},
    )
    assert created.status_code == 201
    hold = created.json["hold"]
    assert hold["status"] == "active" and hold["amount"] == 6
    replay = client.post(
        "/holds",
        json={"owner_id": "jo", "operation": "CREDIT_SPEND", "amount": 6},
        headers={**auth, "Idempotency-Key": "hold-1"},
    )
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert client.get("/balance/jo", headers=auth).json["available"] == 4
    # Available credits, not the balance, limit a debit while the hold lives.
    error_of(
        post(client, auth, "spend", owner_id="jo", operation="CREDIT_SPEND", amount=5),
        402,
        "insufficient_credits",
    )

    got = client.get(f"/holds/{hold['hold_id']}", headers=auth)
    assert got.status_code == 200 and got.json["hold"]["status"] == "active"
    listed = client.get("/owners/jo/holds", headers=auth).json["holds"]
    assert [h["hold_id"] for h in listed] == [hold["hold_id"]]

    captured = client.post(f"/holds/{hold['hold_id']}/capture", json={"amount": 4}, headers=auth)
    assert captured.status_code == 201
    assert captured.json["entry"]["amount"] == -4 and captured.json["balance"] == 6
    again = client.post(f"/holds/{hold['hold_id']}/capture", json={"amount": 4}, headers=auth)
    assert again.status_code == 200 and again.json == captured.json
    error_of(
        client.post(f"/holds/{hold['hold_id']}/capture", json={}, headers=auth),
        409,
        "hold_not_active",
    )
    error_of(client.post(f"/holds/{hold['hold_id']}/release", headers=auth), 409, "hold_not_active")

    second = client.post(
        "/holds",
        json={"owner_id": "jo", "operation": "CREDIT_SPEND", "amount": 2},
        headers={**auth, "Idempotency-Key": "hold-2"},
    ).json["hold"]
    released = client.post(f"/holds/{second['hold_id']}/release", headers=auth)
    assert released.status_code == 200 and released.json["hold"]["status"] == "released"
    assert "Idempotent-Replayed" not in released.headers
    repeat = client.post(f"/holds/{second['hold_id']}/release", headers=auth)
    assert repeat.status_code == 200 and repeat.headers["Idempotent-Replayed"] == "true"
    assert client.get("/balance/jo", headers=auth).json == {
        **client.get("/balance/jo", headers=auth).json,
        "balance": 6,
        "held": 0,
        "available": 6,
    }


def test_hold_errors(client: FlaskClient, tokens: dict[str, str]) -> None:
    auth, core = bearer(tokens["example_app"]), bearer(tokens["core"])
    fund(client, auth, "kim", 5)

    def hold(body: dict[str, Any], key: str, headers: H = auth) -> Any:
        return client.post("/holds", json=body, headers={**headers, "Idempotency-Key": key})

    error_of(
        hold({"owner_id": "kim", "operation": "CREDIT_SPEND", "amount": 50}, "a"),
        402,
        "insufficient_credits",
    )
    error_of(
        hold({"owner_id": "kim", "operation": "CREDIT_ADD", "amount": 1}, "b"),
        422,
        "invalid_argument",
    )
    error_of(
        hold({"owner_id": "kim", "operation": "CREDIT_SPEND", "amount": 1, "ttl_seconds": 0}, "c"),
        422,
        "invalid_argument",
    )
    error_of(
        hold(
            {"owner_id": "kim", "operation": "CREDIT_SPEND", "amount": 1, "ttl_seconds": 10**30},
            "d",
        ),
        422,
        "invalid_argument",
    )
    ok = hold({"owner_id": "kim", "operation": "CREDIT_SPEND", "amount": 2, "ttl_seconds": 60}, "e")
    hold_id = ok.json["hold"]["hold_id"]
    error_of(
        client.post(f"/holds/{hold_id}/capture", json={"amount": 3}, headers=auth),
        422,
        "invalid_amount",
    )
    error_of(
        client.post(f"/holds/{hold_id}/capture", json={}, headers=core),
        403,
        "operation_not_allowed",
    )
    error_of(client.post(f"/holds/{hold_id}/release", headers=core), 403, "operation_not_allowed")
    error_of(client.post("/holds/777777/capture", json={}, headers=auth), 404, "not_found")
    error_of(client.post("/holds/777777/release", headers=auth), 404, "not_found")
    error_of(client.get("/holds/777777", headers=auth), 404, "not_found")
    error_of(
        client.post(f"/holds/{hold_id}/capture", json={"amount": "all"}, headers=auth),
        422,
        "validation_error",
    )


# ---- transfers and reversals -----------------------------------------------------------------


def test_transfer_and_reversal(client: FlaskClient, auth: H) -> None:
    fund(client, auth, "liz", 10)
    body = {"from_owner": "liz", "to_owner": "max", "amount": 4, "metadata": {"why": "lunch"}}
    moved = client.post("/transfers", json=body, headers={**auth, "Idempotency-Key": "t1"})
    assert moved.status_code == 201
    transfer = moved.json["transfer"]
    assert (transfer["amount"], transfer["from_balance"], transfer["to_balance"]) == (4, 6, 4)
    replay = client.post("/transfers", json=body, headers={**auth, "Idempotency-Key": "t1"})
    assert replay.status_code == 200 and replay.json == moved.json
    error_of(
        client.post(
            "/transfers", json={**body, "amount": 5}, headers={**auth, "Idempotency-Key": "t1"}
        ),
        409,
        "idempotency_conflict",
    )
    error_of(
        client.post(
            "/transfers", json={**body, "amount": 100}, headers={**auth, "Idempotency-Key": "t2"}
        ),
        402,
        "insufficient_credits",
    )
    error_of(
        client.post(
            "/transfers",
            json={**body, "to_owner": "liz"},
            headers={**auth, "Idempotency-Key": "t3"},
        ),
        422,
        "invalid_argument",
    )
    error_of(
        client.post(
            "/transfers", json={**body, "amount": 0}, headers={**auth, "Idempotency-Key": "t4"}
        ),
        422,
        "invalid_amount",
    )

    reversal = {"entry_id": transfer["from_entry_id"], "reason": "mistake"}
    reversed_ = client.post("/reversals", json=reversal, headers={**auth, "Idempotency-Key": "r1"})
    assert reversed_.status_code == 201
    assert sorted(e["amount"] for e in reversed_.json["entries"]) == [-4, 4]
    again = client.post("/reversals", json=reversal, headers={**auth, "Idempotency-Key": "r1"})
    assert again.status_code == 200 and again.json == reversed_.json
    error_of(
        client.post("/reversals", json=reversal, headers={**auth, "Idempotency-Key": "r2"}),
        409,
        "already_reversed",
    )
    error_of(
        client.post(
            "/reversals", json={"entry_id": 999999}, headers={**auth, "Idempotency-Key": "r3"}
        ),
        404,
        "not_found",
    )
    error_of(
        client.post(
            "/reversals", json={"entry_id": "one"}, headers={**auth, "Idempotency-Key": "r4"}
        ),
        422,
        "validation_error",
    )
    assert client.get("/balance/liz", headers=auth).json["balance"] == 10
    assert client.get("/balance/max", headers=auth).json["balance"] == 0


def test_reversal_of_another_apps_entry_is_403(client: FlaskClient, tokens: dict[str, str]) -> None:
    example, core = bearer(tokens["example_app"]), bearer(tokens["core"])
    entry = post(client, example, "own", owner_id="ned", operation="CREDIT_ADD", amount=3).json[
        "entry"
    ]
    error_of(
        client.post(
            "/reversals",
            json={"entry_id": entry["entry_id"]},
            headers={**core, "Idempotency-Key": "rev"},
        ),
        403,
        "operation_not_allowed",
    )


# ---- batches -----------------------------------------------------------------------------------


def test_batch_posting(client: FlaskClient, auth: H) -> None:
    items = [{"owner_id": f"o{i}", "operation": "CREDIT_ADD", "amount": i + 1} for i in range(3)]
    first = client.post(
        "/ledger/batch", json={"entries": items}, headers={**auth, "Idempotency-Key": "b"}
    )
    assert first.status_code == 201, first.json
    assert [e["balance"] for e in first.json["entries"]] == [1, 2, 3]
    again = client.post(
        "/ledger/batch", json={"entries": items}, headers={**auth, "Idempotency-Key": "b"}
    )
    assert again.status_code == 200 and again.json == first.json
    bad = [
        *items,
        {"owner_id": "o9", "operation": "CREDIT_SPEND", "amount": 1, "idempotency_key": "own"},
    ]
    refused = client.post(
        "/ledger/batch", json={"entries": bad}, headers={**auth, "Idempotency-Key": "b2"}
    )
    error_of(refused, 402, "insufficient_credits")
    assert client.get("/balance/o0", headers=auth).json["balance"] == 1  # all or nothing


def test_a_batch_key_covers_the_whole_request(client: FlaskClient, auth: H) -> None:
    """Idempotency-Key K with [spend 5], then K with [spend 5, spend 7]: 409, as
    for a single entry; the identical retry is a 200 replay."""
    fund(client, auth, "bk", 100)
    spend = {"owner_id": "bk", "operation": "CREDIT_SPEND"}
    headers = {**auth, "Idempotency-Key": "K"}
    first = client.post(
        "/ledger/batch", json={"entries": [{**spend, "amount": 5}]}, headers=headers
    )
    assert first.status_code == 201, first.json
    longer = [{**spend, "amount": 5}, {**spend, "amount": 7}]
    refused = client.post("/ledger/batch", json={"entries": longer}, headers=headers)
    body = error_of(refused, 409, "idempotency_conflict")
    assert body.get("index") == 0, body
    again = client.post(
        "/ledger/batch", json={"entries": [{**spend, "amount": 5}]}, headers=headers
    )
    assert again.status_code == 200 and again.json == first.json
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert client.get("/balance/bk", headers=auth).json["balance"] == 95


def test_a_large_batch_fits_the_body_limit(client: FlaskClient, auth: H) -> None:
    items = [
        {
            "owner_id": f"owner-{i:05d}",
            "operation": "CREDIT_ADD",
            "amount": 1,
            "metadata": {"order": f"order-{i:08d}"},
        }
        for i in range(10_000)
    ]
    response = client.post(
        "/ledger/batch", json={"entries": items}, headers={**auth, "Idempotency-Key": "big"}
    )
    assert response.status_code == 201, response.json
    assert len(response.json["entries"]) == 10_000


# ---- operations and reports --------------------------------------------------------------------


def test_operations_of_the_keys_app(client: FlaskClient, tokens: dict[str, str]) -> None:
    names = {
        o["operation"]
        for o in client.get("/operations", headers=bearer(tokens["example_app"])).json["operations"]
    }
    assert {"CREDIT_ADD", "CONTENT_ACCESS", "CONTENT_CREATION"} <= names
    assert "OTHER_SPEND" not in names and "TRANSFER_OUT" not in names
    core = client.get("/operations", headers=bearer(tokens["core"])).json
    assert core["app"] == "core" and "CONTENT_ACCESS" not in {
        o["operation"] for o in core["operations"]
    }


def test_report_of_the_keys_app(client: FlaskClient, tokens: dict[str, str]) -> None:
    auth = bearer(tokens["example_app"])
    fund(client, auth, "pat", 10)
    fund(client, auth, "quin", 5)
    post(client, auth, "sp", owner_id="pat", operation="CREDIT_SPEND", amount=3)
    post(client, bearer(tokens["core"]), "c", owner_id="pat", operation="CREDIT_ADD", amount=100)
    now = datetime.now(timezone.utc)
    window = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    report = client.get("/reports", query_string=window, headers=auth)
    assert report.status_code == 200
    rows = {r["operation"]: r for r in report.json["rows"]}
    assert rows["CREDIT_ADD"] == {
        "operation": "CREDIT_ADD",
        "entries": 2,
        "credited": 15,
        "debited": 0,
        "owners": 2,
        "expired": 0,
        "voided": 0,
    }
    assert rows["CREDIT_SPEND"]["debited"] == 3
    reversed_window = {"from": window["to"], "to": window["from"]}
    error_of(
        client.get("/reports", query_string=reversed_window, headers=auth), 422, "invalid_argument"
    )
    error_of(
        client.get(
            "/reports", query_string={"from": "yesterday", "to": window["to"]}, headers=auth
        ),
        422,
        "validation_error",
    )
    error_of(client.get("/reports", headers=auth), 422, "validation_error")


@pytest.mark.parametrize(
    "path", ["/ledger", "/holds", "/transfers", "/reversals", "/ledger/batch", "/content"]
)
def test_every_write_refuses_a_non_object_body(client: FlaskClient, auth: H, path: str) -> None:
    error_of(
        client.post(path, json="text", headers={**auth, "Idempotency-Key": "z"}),
        422,
        "validation_error",
    )
