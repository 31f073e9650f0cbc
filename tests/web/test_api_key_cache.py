"""The per-worker API key cache: a revoked key is refused within the bound,
in the app on its own and in the served stack with its default."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from ledger_py.client import Ledger
from ledger_py.tokens import create_api_key
from tests.web.conftest import serving
from tests.web.helpers import bearer, call
from web import close_app, create_app
from web.api_keys import SERVED_API_KEY_CACHE_SECONDS, KeyResolver

BOUND = 0.5
SLACK = 0.3  # a request's own time, on a loaded machine


@pytest.fixture
def cached_client(ledger: Ledger) -> Iterator[FlaskClient]:
    app = create_app({"LEDGER": ledger, "TESTING": True, "API_KEY_CACHE_SECONDS": BOUND})
    yield app.test_client()
    close_app(app)


def _status_after_revoking(send: object, revoke: object, seconds: float) -> list[tuple[float, int]]:
    """(seconds since the revocation committed, status) of requests sent
    back to back for `seconds` after it."""
    revoke()  # type: ignore[operator]
    revoked_at = time.monotonic()
    seen = []
    while (now := time.monotonic()) - revoked_at < seconds:
        seen.append((now - revoked_at, send()))  # type: ignore[operator]
    return seen


def test_a_revoked_key_is_refused_within_the_cache_bound(
    cached_client: FlaskClient, ledger: Ledger
) -> None:
    key = create_api_key(ledger, app="example_app")
    assert cached_client.get("/operations", headers=bearer(key.token)).status_code == 200
    seen = _status_after_revoking(
        lambda: cached_client.get("/operations", headers=bearer(key.token)).status_code,
        lambda: ledger.revoke_api_key(key_id=key.key_id),
        BOUND + 2 * SLACK,
    )
    # Served from the cache right after the revocation (so the cache is used),
    assert seen[0][1] == 200
    # never past the bound, although every hit came within it (a hit does not extend it),
    assert all(status == 401 for at, status in seen if at > BOUND + SLACK), seen[-3:]
    assert max(at for at, status in seen if status == 200) <= BOUND
    # and a new key of the same app works at once.
    other = create_api_key(ledger, app="example_app")
    assert cached_client.get("/operations", headers=bearer(other.token)).status_code == 200


def test_without_a_cache_a_revocation_takes_effect_at_once(
    client: FlaskClient, ledger: Ledger
) -> None:
    key = create_api_key(ledger, app="example_app")
    assert client.get("/operations", headers=bearer(key.token)).status_code == 200
    ledger.revoke_api_key(key_id=key.key_id)
    assert client.get("/operations", headers=bearer(key.token)).status_code == 401


def test_unknown_tokens_are_not_cached(ledger: Ledger) -> None:
    resolver = KeyResolver(ledger, cache_seconds=60)
    key = create_api_key(ledger, app="core")
    for token in (key.token + "x", "lgk_nothing", key.token):
        resolver.holder_for(token)
    assert len(resolver._cache) == 1
    with pytest.raises(ValueError):
        KeyResolver(ledger, cache_seconds=-1)


def test_the_served_stack_refuses_a_revoked_key_within_its_default_bound(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_API_KEY_CACHE_SECONDS", raising=False)
    bound = float(SERVED_API_KEY_CACHE_SECONDS)
    assert 0 < bound <= 5
    with Ledger(db_url, max_size=1) as ledger, serving(db_url) as (base, _):
        key = create_api_key(ledger, app="core")
        headers = bearer(key.token)
        # Every worker has it cached (requests land on either of the two).
        for _ in range(20):
            assert call(base, "GET", "/operations", headers=headers)[0] == 200
        seen = _status_after_revoking(
            lambda: call(base, "GET", "/operations", headers=headers)[0],
            lambda: ledger.revoke_api_key(key_id=key.key_id),
            bound + 2 * SLACK,
        )
    assert seen[0][1] == 200, seen[:3]  # the cache is on by default
    assert all(status == 401 for at, status in seen if at > bound + SLACK), seen[-3:]
    assert max(at for at, status in seen if status == 200) <= bound
