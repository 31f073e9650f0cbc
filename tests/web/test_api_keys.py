"""API keys: several per app, stored only as hashes, revocable."""

from __future__ import annotations

import hashlib

import psycopg
import pytest
from flask.testing import FlaskClient

from ledger_py.client import Ledger
from ledger_py.errors import UnknownApp
from ledger_py.tokens import create_api_key
from tests.web.helpers import bearer, error_of


def test_keys_are_created_listed_and_revoked(
    client: FlaskClient, ledger: Ledger, db_url: str
) -> None:
    first_key = create_api_key(ledger, app="example_app")
    second_key = create_api_key(ledger, app="example_app")
    (first_id, first), (second_id, second) = [(k.key_id, k.token) for k in (first_key, second_key)]
    assert first != second and first.startswith("lgk_") and len(first) > 40
    listed = {k.key_id: k for k in ledger.list_api_keys()}
    assert listed[first_id].app == "example_app" and listed[first_id].active
    assert second_id in listed

    # Only the SHA-256 of a token is stored, never the token.
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            "SELECT token_sha256 FROM ledger.api_keys WHERE key_id = %s", (first_id,)
        ).fetchone()
        dump = conn.execute("SELECT string_agg(k::text, ' ') FROM ledger.api_keys k").fetchone()
    assert stored is not None and bytes(stored[0]) == hashlib.sha256(first.encode()).digest()
    assert dump is not None and first not in dump[0]

    # Both keys work (rotation); revoking one leaves the other.
    for token in (first, second):
        assert client.get("/operations", headers=bearer(token)).json["app"] == "example_app"
    assert ledger.revoke_api_key(key_id=first_id) is True
    assert ledger.revoke_api_key(key_id=first_id) is False
    assert ledger.revoke_api_key(key_id="key_unknown0") is False
    error_of(client.get("/operations", headers=bearer(first)), 401, "unauthorized")
    assert client.get("/operations", headers=bearer(second)).status_code == 200
    assert {k.key_id: k for k in ledger.list_api_keys()}[first_id].revoked_at is not None


def test_a_key_needs_a_registered_app(ledger: Ledger) -> None:
    with pytest.raises(UnknownApp):
        create_api_key(ledger, app="no_such_app")


def test_the_service_role_can_resolve_but_not_read_keys(ledger: Ledger, db_url: str) -> None:
    token = create_api_key(ledger, app="core").token
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET ROLE ledger_app")
        app = conn.execute(
            "SELECT ledger.api_key_app(%s)", (hashlib.sha256(token.encode()).digest(),)
        ).fetchone()
        assert app == ("core",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM ledger.api_keys")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM ledger.list_api_keys()")
