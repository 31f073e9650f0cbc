"""Hostile JSON, paths and content types: each is a clear 4xx with a stable
code, nothing is written and nothing is logged as an unhandled error.

- deep nesting and integers over Python's digit limit: 400 malformed_json
  (they gave 500: RecursionError, ValueError in the parser);
- duplicate keys at any depth of any body: 400 (the last key won silently);
- NaN, Infinity, -Infinity, 1e400: 400 (NaN reached PostgreSQL);
- a Content-Type other than JSON on an endpoint taking a body: 415 (the
  body was ignored: 422 "missing field");
- a path or query string that is not UTF-8: 400 (werkzeug replaced the bad
  bytes by U+FFFD, so /balance/%FF and /balance/%FE named one owner); this
  one over a real gunicorn, since only a real server hands the raw bytes on.
"""

from __future__ import annotations

import http.client
import json
import logging
from typing import Any

import psycopg
import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient

from tests.web.helpers import bearer, call, error_of, fund
from web.request_input import MAX_DEPTH

H = dict[str, str]

# A body each endpoint taking one would accept; {id} becomes 1.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/ledger": {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5},
    "/ledger/entry": {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5},
    "/ledger/batch": {"entries": [{"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5}]},
    "/holds": {"owner_id": "alice", "operation": "CREDIT_SPEND", "amount": 1},
    "/holds/{hold_id}/capture": {"amount": 1},
    "/transfers": {"from_owner": "alice", "to_owner": "bob", "amount": 1},
    "/reversals": {"entry_id": 1, "reason": "r"},
    "/content": {"owner_id": "alice", "title": "t", "body": "b"},
    "/content/{content_id}/access": {"owner_id": "alice"},
    "/grants": {"owner_id": "alice", "operation": "PROMO_CREDIT", "amount": 5, "priority": 3},
    "/grants/{grant_id}/void": {"reason": "r", "owner_id": "alice"},
    "/webhooks": {"url": "https://example.com/hook"},
    "/webhooks/resend": {"event_id": 1},
}


def written(db_url: str) -> tuple[int, ...]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM ledger.entries), (SELECT count(*) FROM ledger.holds),"
            " (SELECT count(*) FROM example_app.content),"
            " (SELECT count(*) FROM example_app.content_access)"
        ).fetchone()
    assert row is not None
    return tuple(row)


def body_paths(app: APIFlask) -> list[str]:
    """Every path whose operation takes a request body, as the served spec says."""
    spec = app.extensions["served_spec"]
    return [
        path
        for path, operations in spec["paths"].items()
        for operation in operations.values()
        if "requestBody" in operation
    ]


def url(path: str) -> str:
    return path.replace("{hold_id}", "1").replace("{content_id}", "1").replace("{grant_id}", "1")


def post_raw(client: FlaskClient, auth: H, path: str, data: str | bytes, key: str = "k") -> Any:
    headers = {**auth, "Idempotency-Key": key}
    return client.post(path, data=data, content_type="application/json", headers=headers)


@pytest.fixture
def no_unhandled(caplog: pytest.LogCaptureFixture) -> Any:
    """No record with a traceback (the app logs unhandled errors with exc_info)."""
    caplog.set_level(logging.WARNING)
    yield
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


def test_every_body_endpoint_is_covered(app: APIFlask) -> None:
    assert sorted(body_paths(app)) == sorted(VALID_BODIES)


def nested(depth: int, kind: str = "list") -> str:
    """A JSON value of ``depth`` nested arrays or objects."""
    if kind == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


DEEP_OR_LONG = [
    ("metadata", nested(1_000), "too_deep"),
    ("metadata", nested(1_000, "object"), "too_deep"),
    ("metadata", nested(200_000), "too_deep"),
    ("metadata", nested(MAX_DEPTH), "too_deep"),  # the body's object is one more level
    ("amount", "9" * 4_301, "number_too_long"),
    ("metadata", '{"n": ' + "1" * 5_000 + "}", "number_too_long"),
    ("metadata", "[" + "-" + "7" * 10_000 + "]", "number_too_long"),
]


@pytest.mark.parametrize(("field", "value", "reason"), DEEP_OR_LONG)
def test_deep_nesting_and_long_integers_are_400(
    client: FlaskClient,
    auth: H,
    db_url: str,
    no_unhandled: None,
    field: str,
    value: str,
    reason: str,
) -> None:
    fund(client, auth, "alice", 10)
    before = written(db_url)
    body = {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 1}
    text = (
        json.dumps(body)[:-1] + f', "{field}": {value}' + "}"
        if field != "amount"
        else ('{"owner_id": "alice", "operation": "CREDIT_ADD", "amount": ' + value + "}")
    )
    for path in ("/ledger", "/ledger/batch"):
        data = text if path == "/ledger" else '{"entries": [' + text + "]}"
        response = post_raw(client, auth, path, data)
        assert error_of(response, 400, "malformed_json")["reason"] == reason
    assert written(db_url) == before


def test_nesting_up_to_the_limit_and_long_numbers_under_it_are_taken(
    client: FlaskClient, auth: H, db_url: str, no_unhandled: None
) -> None:
    # The body's object is level 1: metadata may nest MAX_DEPTH - 1 levels.
    deep = '{"owner_id": "alice", "operation": "CREDIT_ADD", "metadata": ' + nested(
        MAX_DEPTH - 1, "object"
    )
    assert post_raw(client, auth, "/ledger", deep + "}").status_code == 201
    big = '{"owner_id": "alice", "operation": "CREDIT_ADD", "metadata": {"n": ' + "9" * 4_000
    response = post_raw(client, auth, "/ledger", big + "}}", key="b")
    assert response.status_code == 201, response.json
    # An amount of 4,000 digits is a number the ledger refuses: 422, not 500.
    huge = '{"owner_id": "alice", "operation": "CREDIT_ADD", "amount": ' + "9" * 4_000 + "}"
    assert post_raw(client, auth, "/ledger", huge, key="c").status_code == 422


DUPLICATES = [
    # The one that credited 999: a reader of the first key sees a spend.
    (
        "/ledger",
        '{"owner_id": "alice", "operation": "CREDIT_SPEND", "operation": "CREDIT_ADD",'
        ' "amount": 999}',
        "operation",
    ),
    (
        "/ledger/entry",
        '{"owner_id": "alice", "owner_id": "bob", "operation": "CREDIT_ADD"}',
        "owner_id",
    ),
    (
        "/ledger",
        '{"owner_id": "alice", "operation": "CREDIT_ADD", "metadata": {"a": {"b": 1, "b": 2}}}',
        "b",
    ),
    (
        "/ledger/batch",
        '{"entries": [{"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 1, "amount": 9}]}',
        "amount",
    ),
    (
        "/ledger/batch",
        '{"entries": [], "entries": [{"owner_id": "a", "operation": "CREDIT_ADD"}]}',
        "entries",
    ),
    (
        "/holds",
        '{"owner_id": "alice", "operation": "CREDIT_SPEND", "amount": 1, "amount": 2}',
        "amount",
    ),
    ("/holds/1/capture", '{"amount": 1, "amount": 2}', "amount"),
    (
        "/transfers",
        '{"from_owner": "alice", "to_owner": "bob", "to_owner": "eve", "amount": 1}',
        "to_owner",
    ),
    ("/reversals", '{"entry_id": 1, "entry_id": 2}', "entry_id"),
    ("/content", '{"owner_id": "alice", "title": "t", "body": "b", "body": "c"}', "body"),
    ("/content/1/access", '{"owner_id": "alice", "owner_id": "bob"}', "owner_id"),
    (
        "/grants",
        '{"owner_id": "alice", "operation": "PROMO_CREDIT", "expires_at": "2030-01-01T00:00:00Z",'
        ' "amount": 5, "expires_at": "2030-02-01T00:00:00Z"}',
        "expires_at",
    ),
    ("/grants/1/void", '{"reason": "a", "reason": "b"}', "reason"),
    ("/ledger", '[{"x": 1, "x": 1}]', "x"),  # even with equal values, even where not expected
]


@pytest.mark.parametrize(("path", "data", "key"), DUPLICATES)
def test_duplicate_keys_are_400_at_every_level_of_every_body(
    client: FlaskClient, auth: H, db_url: str, no_unhandled: None, path: str, data: str, key: str
) -> None:
    fund(client, auth, "alice", 10)
    before = written(db_url)
    body = error_of(post_raw(client, auth, path, data), 400, "malformed_json")
    assert body["reason"] == "duplicate_key" and body["key"] == key
    assert written(db_url) == before


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1E999"])
@pytest.mark.parametrize("where", ["amount", "metadata", "batch"])
def test_nan_and_infinity_are_malformed_json(
    client: FlaskClient, auth: H, db_url: str, no_unhandled: None, token: str, where: str
) -> None:
    before = written(db_url)
    head = '{"owner_id": "alice", "operation": "CREDIT_ADD", '
    if where == "amount":
        path, data = "/ledger", head + f'"amount": {token}}}'
    elif where == "metadata":
        path, data = "/ledger", head + f'"metadata": {{"x": [1, {token}]}}}}'
    else:
        path, data = "/ledger/batch", '{"entries": [' + head + f'"metadata": {{"x": {token}}}}}]}}'
    body = error_of(post_raw(client, auth, path, data), 400, "malformed_json")
    assert body["reason"] in ("not_a_number", "number_out_of_range")
    assert "\\u0000" not in body["detail"] and "NUL" not in body["detail"].upper()
    assert written(db_url) == before


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ('{"owner_id": "alice",', "syntax"),
        (b'{"owner_id": "\xff"}', "not_utf8"),
        ('\ufeff{"owner_id": "alice"}', "syntax"),
    ],
)
def test_other_malformed_bodies_name_their_reason(
    client: FlaskClient, auth: H, data: str | bytes, reason: str
) -> None:
    raw = data.encode() if isinstance(data, str) else data
    assert (
        error_of(post_raw(client, auth, "/ledger", raw), 400, "malformed_json")["reason"] == reason
    )


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "text/json", "application/xml", None],
)
def test_a_body_that_is_not_json_is_415_on_every_endpoint_taking_one(
    app: APIFlask, client: FlaskClient, auth: H, db_url: str, content_type: str | None
) -> None:
    fund(client, auth, "alice", 10)
    before = written(db_url)
    for path in body_paths(app):
        data = json.dumps(VALID_BODIES[path])
        headers = {**auth, "Idempotency-Key": "ct"}
        if content_type is None:
            # No Content-Type at all, with a body.
            response = client.open(url(path), method="POST", data=data.encode(), headers=headers)
        else:
            response = client.post(url(path), data=data, content_type=content_type, headers=headers)
        body = error_of(response, 415, "unsupported_media_type")
        assert body["expected"] == "application/json", (path, body)
    assert written(db_url) == before


def test_json_media_types_and_bodiless_posts_are_taken(client: FlaskClient, auth: H) -> None:
    fund(client, auth, "alice", 10)
    body = json.dumps({"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 1})
    for n, content_type in enumerate(
        ["application/json; charset=utf-8", "application/vnd.ledger+json", "Application/JSON"]
    ):
        response = client.post(
            "/ledger",
            data=body,
            content_type=content_type,
            headers={**auth, "Idempotency-Key": f"m{n}"},
        )
        assert response.status_code == 201, (content_type, response.json)
    # No body and no Content-Type: no body (the capture of a whole hold).
    hold = client.post(
        "/holds",
        json={"owner_id": "alice", "operation": "CREDIT_SPEND", "amount": 2},
        headers={**auth, "Idempotency-Key": "h"},
    ).json["hold"]
    captured = client.post(f"/holds/{hold['hold_id']}/capture", headers=auth)
    assert captured.status_code == 201 and captured.json["entry"]["amount"] == -2


# ---- paths and query strings, over a real server --------------------------------------------

PATH_ROUTES = [
    ("GET", "/balance/{}"),
    ("GET", "/ledger/{}/balance"),
    ("GET", "/owners/{}/entries"),
    ("GET", "/owners/{}/holds"),
    ("GET", "/owners/{}/grants"),
    ("GET", "/owners/{}/spending"),
]
BAD_BYTES = ["%FF", "%FE", "a%C3%28b", "%ED%A0%80", "%C0%AF", "x/%80"]


def raw_request(base: str, method: str, target: str, token: str) -> tuple[int, Any]:
    """One request with the target exactly as given (no client-side quoting)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_every_path_string_route_is_listed(app: APIFlask) -> None:
    # The API's routes (the console's HTML pages need a session: tests/web/test_console.py).
    routes = {
        rule.rule.replace("<path:owner_id>", "{}")
        for rule in app.url_map.iter_rules()
        if "owner_id" in rule.arguments and not rule.rule.startswith("/console/")
    }
    assert routes == {route for _, route in PATH_ROUTES}


def test_paths_and_queries_that_are_not_utf8_are_400(served: tuple[str, str]) -> None:
    base, token = served
    # An owner whose id really is U+FFFD, spelled in UTF-8, is that owner.
    status, _, _ = call(
        base,
        "POST",
        "/ledger",
        {"owner_id": "\ufffd", "operation": "CREDIT_ADD", "amount": 3},
        bearer(token, **{"Idempotency-Key": "fffd"}),
    )
    assert status == 201
    status, body = raw_request(base, "GET", "/balance/%EF%BF%BD", token)
    assert status == 200 and body["balance"] == 3 and body["owner_id"] == "\ufffd"
    for method, route in PATH_ROUTES:
        for bad in BAD_BYTES:
            status, body = raw_request(base, method, route.format(bad), token)
            assert (status, body["code"]) == (400, "invalid_path"), (route, bad, body)
    for target in (
        "/content/1/access?owner_id=%FF",
        "/owners/alice/entries?after_id=%FE",
        "/balance/alice?x=%C3%28",
    ):
        method = "POST" if "access" in target else "GET"
        status, body = raw_request(base, method, target, token)
        assert (status, body["code"]) == (400, "invalid_query"), (target, body)
    # Nothing was written for the aliases, and UTF-8 paths still answer.
    status, body = raw_request(base, "GET", "/balance/%EF%BF%BD", token)
    assert body["balance"] == 3
    assert raw_request(base, "GET", "/owners/%C3%A9l%C3%A8ve/entries", token)[0] == 200
