"""Security over HTTP (in-process Flask client, a database of its own per
test): API keys missing, malformed, unknown or revoked give 401 on every
resource and write nothing; a key of one app cannot use, capture, release or
reverse what belongs to another (403); keys exist in the database only as
SHA-256 hashes (the raw token appears in no row of any table); a body over
4 MiB is refused with 413 before anything is written; strange owner ids
round-trip literally through JSON bodies and URL paths.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from flask.testing import FlaskClient

from ledger_py import Ledger
from ledger_py.tokens import create_api_key
from web import close_app, create_app

from .invariants import ledger_problems

MAX_BODY = 4 * 1024 * 1024


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    with Ledger(db_url, min_size=1, max_size=4) as instance:
        instance.define_app(app="other_app")
        instance.define_operation(
            app="other_app",
            operation="OTHER_SPEND",
            direction="debit",
            default_amount=1,
            caller_sets_amount=True,
            max_amount=100,
        )
        instance.post_entry(
            owner_id="alice", app="core", operation="CREDIT_ADD", idempotency_key="fund", amount=500
        )
        yield instance


@pytest.fixture
def client(ledger: Ledger) -> Iterator[FlaskClient]:
    app = create_app({"LEDGER": ledger, "TESTING": True})
    yield app.test_client()
    close_app(app)


@pytest.fixture
def tokens(ledger: Ledger) -> dict[str, str]:
    return {
        app: create_api_key(ledger, app=app).token for app in ("core", "example_app", "other_app")
    }


def bearer(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


def written(db_url: str) -> tuple[int, ...]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM ledger.entries),"
            " (SELECT count(*) FROM ledger.holds),"
            " (SELECT count(*) FROM example_app.content)"
        ).fetchone()
    assert row is not None
    return tuple(row)


# Every resource that needs a key, with a request that would succeed with one.
REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "/balance/alice", None),
    ("GET", "/ledger/alice/balance", None),
    ("GET", "/owners/alice/entries", None),
    ("GET", "/owners/alice/holds", None),
    ("GET", "/entries/1", None),
    ("GET", "/holds/1", None),
    ("GET", "/operations", None),
    ("GET", "/reports?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z", None),
    ("POST", "/ledger", {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5}),
    ("POST", "/ledger/entry", {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5}),
    ("POST", "/ledger/batch", {"entries": [{"owner_id": "alice", "operation": "CREDIT_ADD"}]}),
    ("POST", "/holds", {"owner_id": "alice", "operation": "CREDIT_SPEND", "amount": 5}),
    ("POST", "/holds/1/capture", {}),
    ("POST", "/holds/1/release", None),
    ("POST", "/transfers", {"from_owner": "alice", "to_owner": "bob", "amount": 5}),
    ("POST", "/reversals", {"entry_id": 1}),
    ("POST", "/content", {"owner_id": "alice", "title": "t", "body": "b"}),
    ("POST", "/content/1/access", {"owner_id": "alice"}),
]


def _bad_authorizations(tokens: dict[str, str], revoked: str) -> list[dict[str, str]]:
    core = tokens["core"]
    return [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {core}"},
        {"Authorization": f"Token {core}"},
        {"Authorization": f"Bearer {core}x"},
        {"Authorization": f"Bearer {core[:-1]}"},
        {"Authorization": f"Bearer {core.upper()}"},
        {"Authorization": f"Bearer {core.removeprefix('lgk_')}"},
        {"Authorization": "Bearer lgk_" + "A" * 43},
        {"Authorization": "Bearer lgk_" + "x" * 10_000},
        {"Authorization": f"Bearer {hashlib.sha256(core.encode()).hexdigest()}"},
        {"Authorization": "Bearer ' OR '1'='1"},
        {"Authorization": f"Bearer {revoked}"},
    ]


def test_missing_bad_or_revoked_keys_get_401_everywhere(
    client: FlaskClient, ledger: Ledger, tokens: dict[str, str], db_url: str
) -> None:
    revoked_key = create_api_key(ledger, app="core")
    revoked_id, revoked = revoked_key.key_id, revoked_key.token
    assert client.get("/balance/alice", headers=bearer(revoked)).status_code == 200
    assert ledger.revoke_api_key(key_id=revoked_id) is True
    before = written(db_url)
    tried = 0
    for headers in _bad_authorizations(tokens, revoked):
        for method, path, body in REQUESTS:
            response = client.open(
                path, method=method, json=body, headers={**headers, "Idempotency-Key": f"k{tried}"}
            )
            tried += 1
            assert response.status_code == 401, (headers, method, path, response.json)
            assert response.json["code"] == "unauthorized"
    assert written(db_url) == before
    # The other key of the same app still works (rotation), at once.
    assert client.get("/balance/alice", headers=bearer(tokens["core"])).status_code == 200
    print(f"\n401 checks: {tried} requests")


def test_an_app_cannot_touch_another_apps_operations_holds_or_entries(
    client: FlaskClient, tokens: dict[str, str], db_url: str
) -> None:
    example, other, core = tokens["example_app"], tokens["other_app"], tokens["core"]
    hold = client.post(
        "/holds",
        json={"owner_id": "alice", "operation": "CONTENT_CREATION"},
        headers=bearer(example, "h1"),
    ).json["hold"]
    entry = client.post(
        "/ledger",
        json={"owner_id": "alice", "operation": "CONTENT_ACCESS"},
        headers=bearer(example, "e1"),
    ).json["entry"]
    before = written(db_url)
    refused = [
        client.post(
            "/ledger",
            json={"owner_id": "alice", "operation": "CONTENT_ACCESS"},
            headers=bearer(other, "x1"),
        ),
        client.post(
            "/ledger",
            json={"owner_id": "alice", "operation": "OTHER_SPEND"},
            headers=bearer(core, "x2"),
        ),
        client.post(
            "/ledger/batch",
            json={
                "entries": [
                    {"owner_id": "alice", "operation": "CREDIT_ADD", "idempotency_key": "ok"},
                    {"owner_id": "alice", "operation": "OTHER_SPEND", "idempotency_key": "no"},
                ]
            },
            headers=bearer(example),
        ),
        client.post(
            "/holds",
            json={"owner_id": "alice", "operation": "CONTENT_CREATION"},
            headers=bearer(other, "x3"),
        ),
        client.post(f"/holds/{hold['hold_id']}/capture", json={}, headers=bearer(other)),
        client.post(f"/holds/{hold['hold_id']}/release", headers=bearer(core)),
        client.post("/reversals", json={"entry_id": entry["entry_id"]}, headers=bearer(core, "x4")),
        # System operations belong to transfer() and reverse_entry() alone.
        client.post(
            "/ledger",
            json={"owner_id": "alice", "operation": "TRANSFER_IN", "amount": 9},
            headers=bearer(core, "x5"),
        ),
        client.post(
            "/ledger",
            json={"owner_id": "alice", "operation": "REVERSAL", "amount": 9},
            headers=bearer(core, "x6"),
        ),
        # The example app's content is the example app's.
        client.post(
            "/content",
            json={"owner_id": "alice", "title": "t", "body": "b"},
            headers=bearer(core, "x7"),
        ),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused), [r.json for r in refused]
    assert written(db_url) == before
    assert (
        client.get(f"/holds/{hold['hold_id']}", headers=bearer(example)).json["hold"]["status"]
        == "active"
    )


def test_keys_are_stored_only_as_hashes(
    client: FlaskClient, ledger: Ledger, tokens: dict[str, str], db_url: str
) -> None:
    for app, token in tokens.items():
        assert client.get("/operations", headers=bearer(token)).json["app"] == app
        client.post(
            "/ledger",
            json={
                "owner_id": "alice",
                "operation": "CREDIT_ADD",
                "amount": 1,
                "metadata": {"note": "no secret here"},
            },
            headers=bearer(token, f"use-{app}"),
        )
    with psycopg.connect(db_url) as conn:
        stored = dict(conn.execute("SELECT app, token_sha256 FROM ledger.api_keys").fetchall())
        tables = conn.execute(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " AND table_type = 'BASE TABLE'"
        ).fetchall()
        assert len(tables) >= 8
        for token in tokens.values():
            secret = token.removeprefix("lgk_")
            for (table,) in tables:
                # Every column of every row, as text (bytea shows as \x hex).
                hits = conn.execute(
                    f"SELECT count(*) FROM {table} t WHERE strpos(t::text, %s) > 0"
                    f" OR strpos(t::text, %s) > 0",
                    (secret, secret.encode().hex()),
                ).fetchone()
                assert hits == (0,), f"the token appears in {table}"
    for app, token in tokens.items():
        assert bytes(stored[app]) == hashlib.sha256(token.encode()).digest()
    listed = ledger.list_api_keys()
    assert all("sha" not in json.dumps(vars(k), default=str) for k in listed)
    # ledger_app (the web service's role) may resolve a hash but not read the table.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET ROLE ledger_app")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM ledger.api_keys")


def test_body_over_the_limit_is_413_and_writes_nothing(
    client: FlaskClient, tokens: dict[str, str], db_url: str
) -> None:
    before = written(db_url)
    filler = "x" * MAX_BODY
    for path in ("/ledger", "/ledger/batch", "/holds", "/transfers", "/content"):
        body = json.dumps(
            {"owner_id": "alice", "operation": "CREDIT_ADD", "metadata": {"f": filler}}
        )
        response = client.post(
            path,
            data=body,
            content_type="application/json",
            headers=bearer(tokens["example_app" if path == "/content" else "core"], f"big-{path}"),
        )
        assert response.status_code == 413, (path, response.status_code)
        assert response.json["code"] == "body_too_large"
    # Without a key the limit still applies (the body is refused either way, never read in full).
    response = client.post("/ledger", data="x" * (MAX_BODY + 1), content_type="application/json")
    assert response.status_code in (401, 413)
    # Just under the limit is not a 413: the ledger judges it (metadata over 64 KiB: 422).
    body = json.dumps(
        {"owner_id": "alice", "operation": "CREDIT_ADD", "metadata": {"f": "x" * (MAX_BODY - 200)}}
    )
    assert len(body) < MAX_BODY
    response = client.post(
        "/ledger",
        data=body,
        content_type="application/json",
        headers=bearer(tokens["core"], "just-under"),
    )
    assert response.status_code == 422 and response.json["code"] == "invalid_argument"
    assert written(db_url) == before


STRANGE = [
    "Robert'); DROP TABLE ledger.entries;--",
    "a/b/../c",
    "50% off?#frag",
    "semi;colon",
    "back\\slash",
    'quote"d',
    "日本語",
    "😀",
    "e\u0301",
    "\u202eevil",
    " spaced ",
    "%2F",
    ".",
]


def test_strange_owner_ids_round_trip_over_http(
    client: FlaskClient, tokens: dict[str, str], db_url: str
) -> None:
    auth = tokens["core"]
    for index, owner in enumerate(STRANGE):
        response = client.post(
            "/ledger",
            json={"owner_id": owner, "operation": "CREDIT_ADD", "amount": index + 1},
            headers=bearer(auth, f"s{index}"),
        )
        assert response.status_code == 201, (owner, response.json)
        assert response.json["entry"]["owner_id"] == owner
    for index, owner in enumerate(STRANGE):
        response = client.get("/balance/" + quote(owner, safe=""), headers=bearer(auth))
        if response.status_code == 404 and owner in (".",):
            continue  # a path segment of "." is normalized away by URL rules, not by the ledger
        assert response.status_code == 200, (owner, response.status_code)
        assert (response.json["owner_id"], response.json["balance"]) == (owner, index + 1), owner
    with psycopg.connect(db_url) as conn:
        stored = {r[0] for r in conn.execute("SELECT owner_id FROM ledger.accounts").fetchall()}
        assert set(STRANGE) <= stored
        assert ledger_problems(conn) == []


@pytest.mark.parametrize(
    "path,body",
    [
        ("/ledger", '{"owner_id": "\\ud800", "operation": "CREDIT_ADD"}'),
        ("/ledger", '{"owner_id": "alice", "operation": "CREDIT_\\udfff"}'),
        ("/ledger", '{"owner_id": "alice", "operation": "CREDIT_ADD", "nonce": "\\ud83d"}'),
        ("/ledger", '{"owner_id": "alice", "operation": "CREDIT_ADD", "metadata": {"\\ud800": 1}}'),
        ("/ledger/batch", '{"entries": [{"owner_id": "\\ud800", "operation": "CREDIT_ADD"}]}'),
        ("/holds", '{"owner_id": "\\udc00", "operation": "CREDIT_SPEND"}'),
        ("/transfers", '{"from_owner": "alice", "to_owner": "\\ud800", "amount": 1}'),
        ("/reversals", '{"entry_id": 1, "reason": "\\ud800"}'),
        ("/ledger", '{"owner_id": "a\\u0000b", "operation": "CREDIT_ADD"}'),
    ],
)
def test_text_postgresql_cannot_store_is_422_never_500(
    client: FlaskClient, tokens: dict[str, str], db_url: str, path: str, body: str
) -> None:
    """JSON escapes that decode to a lone surrogate or NUL (found by the wrapper
    fuzzing: a lone surrogate answered 500 before ledger_py translated it)."""
    before = written(db_url)
    response = client.post(
        path,
        data=body,
        content_type="application/json",
        headers=bearer(tokens["core"], "surrogate"),
    )
    assert response.status_code == 422, (response.status_code, response.json)
    assert response.json["code"] == "invalid_argument"
    assert written(db_url) == before
