"""The API-key methods of Ledger and AsyncLedger, and ledger_py.tokens (which
makes a token and sends only its hash through them).

Each test runs with both classes (fixture `ledger`). The rules of a key
(hash, label, scope) are the table's constraints, tested in
tests/sql/test_api_keys.py; here: what the wrapper sends and hands back.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import psycopg
import pytest

from ledger_py import ApiKey, InvalidArgument, KeyHolder, NewApiKey, UnknownApp, tokens


def test_a_key_is_made_listed_found_and_revoked(ledger: Any, db_url: str) -> None:
    created = tokens.create_api_key(ledger, app="example_app", label="content service")
    assert isinstance(created, NewApiKey) and isinstance(created.key, ApiKey)
    assert re.fullmatch(r"key_[0-9a-f]{16}", created.key_id)
    assert (created.key.app, created.key.label, created.key.scope) == (
        "example_app",
        "content service",
        "app",
    )
    assert created.key.active and created.token.startswith(tokens.TOKEN_PREFIX)
    # The token is in the result only: not in its repr, not in the database.
    assert created.token not in repr(created)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT token_sha256, k::text FROM ledger.api_keys k WHERE key_id = %s",
            (created.key_id,),
        ).fetchone()
    assert row is not None and bytes(row[0]) == hashlib.sha256(created.token.encode()).digest()
    assert created.token not in row[1]

    assert ledger.list_api_keys() == [created.key]
    holder = ledger.api_key_lookup(token_sha256=tokens.token_hash(created.token))
    assert holder == KeyHolder("example_app", "app") and holder.reads_as == "example_app"

    assert ledger.revoke_api_key(key_id=created.key_id) is True
    assert ledger.revoke_api_key(key_id=created.key_id) is False
    assert ledger.revoke_api_key(key_id="key_unknown0") is False
    assert ledger.api_key_lookup(token_sha256=tokens.token_hash(created.token)) is None
    [listed] = ledger.list_api_keys()
    assert listed.key_id == created.key_id and not listed.active


def test_the_method_sends_a_hash_and_the_database_makes_the_key_id(ledger: Any) -> None:
    token = tokens.new_token()
    key = ledger.create_api_key(app="core", token_sha256=tokens.token_hash(token), label="ops")
    assert isinstance(key, ApiKey) and re.fullmatch(r"key_[0-9a-f]{16}", key.key_id)
    assert (key.app, key.label, key.scope, key.active) == ("core", "ops", "app", True)
    assert ledger.api_key_lookup(token_sha256=tokens.token_hash(token)) == KeyHolder("core", "app")


def test_an_audit_key_reads_as_every_app(ledger: Any) -> None:
    created = tokens.create_api_key(ledger, app="core", scope="audit")
    holder = ledger.api_key_lookup(token_sha256=tokens.token_hash(created.token))
    assert holder == KeyHolder("core", "audit") and holder.reads_as is None


def test_the_database_judges_scope_and_label(ledger: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        tokens.create_api_key(ledger, app="core", scope="admin")
    assert caught.value.detail["field"] == "scope"
    assert caught.value.detail["constraint"] == "api_keys_scope_valid"
    with pytest.raises(InvalidArgument) as caught:
        tokens.create_api_key(ledger, app="core", label="x" * 256)
    assert caught.value.detail["reason"] == "too long"
    with pytest.raises(UnknownApp):
        tokens.create_api_key(ledger, app="no_such_app")
    assert ledger.list_api_keys() == []


def test_a_hash_of_the_wrong_type_is_refused_before_any_round_trip(ledger: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ledger.api_key_lookup(token_sha256="lgk_not-hashed")
    assert caught.value.detail == {"field": "token_sha256", "reason": "wrong type", "expected": "bytes"}
    assert not isinstance(caught.value.__cause__, psycopg.Error)


def test_tokens_are_random_and_only_ours_are_looked_up() -> None:
    made = {tokens.new_token() for _ in range(100)}
    assert len(made) == 100
    assert all(t.startswith("lgk_") and len(t) == 47 for t in made)
    token = made.pop()
    assert tokens.lookup_digest(token) == tokens.token_hash(token)
    assert tokens.token_hash(token) == hashlib.sha256(token.encode()).digest()
    for other in (None, "", "Bearer " + token, "abc_" + token[4:], token + "x" * 200):
        assert tokens.lookup_digest(other) is None
