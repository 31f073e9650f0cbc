"""Bad input never gives a 500: random JSON bodies and path values against
every write and read, answered with a documented status (the client
fixture also checks each answer against the OpenAPI document)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

text = st.text(max_size=12) | st.sampled_from(
    ["", "\x00", "x" * 300, "CREDIT_ADD", "alice", "\ud800"]
)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
FIELDS = [
    "owner_id",
    "operation",
    "amount",
    "metadata",
    "nonce",
    "from_owner",
    "to_owner",
    "entry_id",
    "reason",
    "ttl_seconds",
    "title",
    "body",
    "entries",
]
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6) | json_values
WRITES = [
    "/ledger",
    "/ledger/batch",
    "/holds",
    "/transfers",
    "/reversals",
    "/content",
    "/holds/1/capture",
    "/holds/1/release",
    "/content/1/access",
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(WRITES), body=bodies, key=st.none() | text)
def test_random_write_bodies_never_fail_with_500(
    client: FlaskClient, auth: dict[str, str], path: str, body: Any, key: str | None
) -> None:
    headers = dict(auth)
    if key is not None and key.isprintable() and key.isascii():
        headers["Idempotency-Key"] = key
    data = json.dumps(body)  # lone surrogates travel as \\ud800 escapes
    response = client.post(path, data=data, headers=headers, content_type="application/json")
    assert response.status_code < 500 or response.status_code == 502, (path, body, response.json)
    assert set(response.json) >= ({"code", "detail"} if response.status_code >= 400 else set())


# A URL carries bytes: no lone surrogate can reach a path or query string.
url_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "\x00", "x" * 300, "-1", "0", "99999999999999999999", "2020-01-01T00:00:00Z"]
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    owner=url_text.filter(lambda s: s and "/" not in s and s not in (".", "..")),
    limit=url_text,
    after=url_text,
)
def test_random_reads_never_fail_with_500(
    client: FlaskClient, auth: dict[str, str], owner: str, limit: str, after: str
) -> None:
    path = quote(owner, safe="")  # a '?' or '#' in an id is data, not URL syntax
    for response in (
        client.get(f"/balance/{path}", headers=auth),
        client.get(
            f"/owners/{path}/entries",
            query_string={"limit": limit, "after_id": after},
            headers=auth,
        ),
        client.get(f"/owners/{path}/holds", headers=auth),
        client.get("/reports", query_string={"from": limit, "to": after}, headers=auth),
    ):
        assert response.status_code < 500, (owner, response.json)
