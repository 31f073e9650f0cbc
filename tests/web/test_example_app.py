"""The example content app: hold, work, store + capture in one transaction;
release on failure; access charged once per reader and content."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from tests.web.helpers import error_of, fund

H = dict[str, str]


def create(client: FlaskClient, auth: H, key: str | None = "c-1", **body: Any) -> Any:
    payload = {"owner_id": "alice", "title": "Hello", "body": "  a body  ", **body}
    headers = {**auth, **({"Idempotency-Key": key} if key else {})}
    return client.post("/content", json=payload, headers=headers)


def test_create_content_charges_the_creation_once(
    client: FlaskClient, auth: H, db_url: str
) -> None:
    fund(client, auth, "alice", 12)
    first = create(client, auth)
    assert first.status_code == 201
    body = first.json
    assert body["content"]["title"] == "Hello" and body["content"]["body"] == "a body"
    assert body["entry"]["operation"] == "CONTENT_CREATION" and body["entry"]["amount"] == -5
    assert body["balance"] == 7 and body["charged"] is True
    again = create(client, auth)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert client.get("/balance/alice", headers=auth).json == {
        **client.get("/balance/alice", headers=auth).json,
        "balance": 7,
        "held": 0,
    }
    # The content row records the hold that paid for it and the capture entry.
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT hold_id, entry_id FROM example_app.content").fetchall()
    assert len(row) == 1 and row[0][1] == body["entry"]["entry_id"]
    # Without a key each request is new content.
    assert create(client, auth, key=None).status_code == 201
    assert create(client, auth, key="c-other", title="Other").status_code == 402


@pytest.mark.parametrize("changed", [{"title": "Another"}, {"body": "another body"}])
def test_the_same_key_with_other_content_is_409_and_charges_nothing(
    client: FlaskClient, auth: H, db_url: str, changed: dict[str, str]
) -> None:
    """The key covers the whole request: a retry must be the same content."""
    fund(client, auth, "alice", 12)
    first = create(client, auth)
    assert first.status_code == 201
    other = create(client, auth, **changed)
    assert other.status_code == 409, other.json
    assert other.json["code"] == "idempotency_conflict"
    assert client.get("/balance/alice", headers=auth).json["balance"] == 7
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM example_app.content").fetchone() == (1,)
    # The original request still replays.
    again = create(client, auth)
    assert again.status_code == 200 and again.json == first.json


def test_failed_work_releases_the_hold_and_charges_nothing(
    app: APIFlask, client: FlaskClient, auth: H, db_url: str
) -> None:
    fund(client, auth, "alice", 10)

    def failing_work(title: str, body: str) -> str:
        raise RuntimeError("the generator is down")

    app.config["CONTENT_WORK"] = failing_work
    failed = create(client, auth, key="c-fail")
    body = error_of(failed, 502, "content_work_failed")
    hold = client.get(f"/holds/{body['hold_id']}", headers=auth).json["hold"]
    assert hold["status"] == "released"
    assert client.get("/balance/alice", headers=auth).json["available"] == 10
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM example_app.content").fetchone() == (0,)
    app.config["CONTENT_WORK"] = lambda title, body: body
    assert create(client, auth, key="c-next").status_code == 201


def test_create_content_errors(client: FlaskClient, auth: H) -> None:
    error_of(create(client, auth, key="e1"), 402, "insufficient_credits")
    fund(client, auth, "alice", 10)
    # The title's length is the content table's CHECK constraint: the row it
    # refuses rolls back with the capture, and the hold is released.
    for key, title in (("e2", ""), ("e3", "x" * 501)):
        refused = error_of(create(client, auth, key=key, title=title), 422, "invalid_argument")
        assert (refused["field"], refused["constraint"]) == ("title", "content_title_length")
    assert create(client, auth, key="e3b", title="x" * 500).status_code == 201
    fund(client, auth, "alice", 5)
    error_of(create(client, auth, key="e4", body="nul \u0000 inside"), 422, "invalid_argument")
    lone = client.post(
        "/content",
        data='{"owner_id": "alice", "title": "\\ud800", "body": "b"}',
        headers={**auth, "Idempotency-Key": "e6"},
        content_type="application/json",
    )
    assert error_of(lone, 422, "invalid_argument")["reason"] == "not encodable"
    error_of(create(client, auth, key="e5", owner_id=""), 422, "invalid_argument")
    error_of(
        client.post("/content", json={"owner_id": "alice"}, headers=auth), 422, "validation_error"
    )
    assert client.get("/balance/alice", headers=auth).json["available"] == 10


def test_access_is_charged_once_per_reader(client: FlaskClient, auth: H, db_url: str) -> None:
    fund(client, auth, "alice", 5)
    content_id = create(client, auth).json["content"]["content_id"]
    error_of(
        client.post(f"/content/{content_id}/access", json={"owner_id": "bob"}, headers=auth),
        402,
        "insufficient_credits",
    )
    fund(client, auth, "bob", 3)
    first = client.post(f"/content/{content_id}/access", json={"owner_id": "bob"}, headers=auth)
    assert first.status_code == 201
    assert first.json["charged"] is True and first.json["balance"] == 2
    assert first.json["entry"]["operation"] == "CONTENT_ACCESS"
    assert first.json["content"]["content_id"] == content_id
    # The older query parameter works too; a repeated access is free.
    second = client.post(f"/content/{content_id}/access?owner_id=bob", headers=auth)
    assert second.status_code == 200 and second.json["charged"] is False
    assert second.json["entry"] == first.json["entry"] and second.json["balance"] == 2
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT content_id, owner_id FROM example_app.content_access"
        ).fetchall()
    assert rows == [(content_id, "bob")]

    error_of(
        client.post("/content/424242/access", json={"owner_id": "bob"}, headers=auth),
        404,
        "not_found",
    )
    error_of(
        client.post(f"/content/{content_id}/access", json={}, headers=auth), 422, "invalid_argument"
    )
    error_of(
        client.post(f"/content/{content_id}/access", json={"owner_id": 7}, headers=auth),
        422,
        "validation_error",
    )


def access(client: FlaskClient, auth: H, content_id: int, reader: str) -> Any:
    return client.post(f"/content/{content_id}/access", json={"owner_id": reader}, headers=auth)


def test_a_reader_of_255_characters_gets_its_access(client: FlaskClient, auth: H) -> None:
    """The access key has a fixed length: a long reader id no longer makes it
    longer than 255 characters (a 422 about a key the client never sent)."""
    fund(client, auth, "alice", 5)
    content_id = create(client, auth).json["content"]["content_id"]
    for reader in ("r" * 250, "é" * 255):
        fund(client, auth, reader, 3, key=f"fund-{len(reader)}-{reader[0]}")
        first = access(client, auth, content_id, reader)
        assert first.status_code == 201, first.json
        again = access(client, auth, content_id, reader)
        assert again.status_code == 200 and again.json["charged"] is False
        assert client.get(f"/balance/{reader}", headers=auth).json["balance"] == 2


def test_no_other_caller_can_take_the_access_key_first(
    client: FlaskClient, auth: H, tokens: dict[str, str], db_url: str
) -> None:
    """Another caller of the app (here: any example_app key, through POST /ledger)
    used to post under the reader's access key first, so the reader's access
    was 409 forever. The key is now an HMAC under a secret the callers never see."""
    fund(client, auth, "alice", 5)
    fund(client, auth, "bob", 3)
    fund(client, auth, "mallory", 10)
    content_id = create(client, auth).json["content"]["content_id"]
    # Every key a caller could build from what it knows: the pair, in any spelling.
    for n, guess in enumerate(
        [
            f"content-access:{content_id}:bob",
            f"content-access:{content_id}:bob".upper(),
            f"access:{content_id}:bob",
            f"{content_id}:bob",
        ]
    ):
        squat = client.post(
            "/ledger",
            json={"owner_id": "mallory", "operation": "CONTENT_ACCESS", "metadata": {"n": n}},
            headers={**auth, "Idempotency-Key": guess},
        )
        assert squat.status_code == 201
    first = access(client, auth, content_id, "bob")
    assert first.status_code == 201 and first.json["charged"] is True, first.json
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT idempotency_key FROM ledger.entries WHERE entry_id = %s",
            (first.json["entry"]["entry_id"],),
        ).fetchone()
        secret = conn.execute("SELECT secret FROM example_app.access_key_secret").fetchone()
    assert row is not None and "bob" not in row[0] and len(row[0]) == 79
    assert secret is not None and len(secret[0]) >= 32


def test_body_and_query_naming_different_readers_is_422(
    client: FlaskClient, auth: H, db_url: str
) -> None:
    fund(client, auth, "alice", 5)
    fund(client, auth, "bob", 3)
    fund(client, auth, "carol", 3)
    content_id = create(client, auth).json["content"]["content_id"]
    path = f"/content/{content_id}/access"
    before = (
        client.get("/balance/bob", headers=auth).json,
        client.get("/balance/carol", headers=auth).json,
    )
    body = error_of(
        client.post(f"{path}?owner_id=carol", json={"owner_id": "bob"}, headers=auth),
        422,
        "invalid_argument",
    )
    assert body["field"] == "owner_id"
    after = (
        client.get("/balance/bob", headers=auth).json,
        client.get("/balance/carol", headers=auth).json,
    )
    assert after == before
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM example_app.content_access").fetchone() == (0,)
    # The same reader in both is that reader.
    same = client.post(f"{path}?owner_id=bob", json={"owner_id": "bob"}, headers=auth)
    assert same.status_code == 201 and same.json["entry"]["owner_id"] == "bob"


def test_an_access_recorded_under_an_earlier_key_is_still_a_replay(
    client: FlaskClient, auth: H, ledger: Any, db_url: str
) -> None:
    """Accesses made before the key became an HMAC (key content-access:C:R)
    answer from their access row: no second charge."""
    fund(client, auth, "alice", 5)
    fund(client, auth, "bob", 3)
    content_id = create(client, auth).json["content"]["content_id"]
    with psycopg.connect(db_url) as conn:
        entry = ledger.post_entry(
            owner_id="bob",
            app="example_app",
            operation="CONTENT_ACCESS",
            idempotency_key=f"content-access:{content_id}:bob",
            metadata={"content_id": content_id},
        )
        conn.execute(
            "INSERT INTO example_app.content_access (content_id, owner_id, entry_id)"
            " VALUES (%s, 'bob', %s)",
            (content_id, entry.entry_id),
        )
    again = access(client, auth, content_id, "bob")
    assert again.status_code == 200 and again.json["charged"] is False
    assert again.json["entry"]["entry_id"] == entry.entry_id and again.json["balance"] == 2
