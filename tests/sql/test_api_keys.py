"""create_api_key, list_api_keys, revoke_api_key, api_key_lookup: the HTTP API's keys in SQL.

The key id is made by the database; the hash, label and scope rules are the
table's constraints alone, and a value that breaks one is LG007 naming the
field and the constraint (read from the error, not restated in the function).
"""

from __future__ import annotations

import hashlib
import json
import re

import psycopg
import pytest

from .helpers import call, one


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def stored_keys(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM ledger.api_keys").fetchone()
    assert row is not None
    return int(row[0])


def test_the_database_makes_the_key_id(conn):
    first = one(conn, "create_api_key", app="core", token_sha256=digest("a"))
    second = one(conn, "create_api_key", app="core", token_sha256=digest("b"), label="rotation")
    for key in (first, second):
        assert re.fullmatch(r"key_[0-9a-f]{16}", key["key_id"]), key
        assert (key["app"], key["scope"], key["revoked_at"]) == ("core", "app", None)
    assert first["key_id"] != second["key_id"]
    assert [k["key_id"] for k in call(conn, "list_api_keys")] == [
        first["key_id"],
        second["key_id"],
    ]
    assert one(conn, "api_key_lookup", token_sha256=digest("b")) == {"app": "core", "scope": "app"}
    assert one(conn, "revoke_api_key", key_id=second["key_id"]) == {"revoke_api_key": True}
    assert call(conn, "api_key_lookup", token_sha256=digest("b")) == []


def test_a_caller_cannot_choose_the_key_id(conn):
    with pytest.raises(psycopg.errors.UndefinedFunction):
        one(conn, "create_api_key", app="core", key_id="key_chosen01", token_sha256=digest("a"))


@pytest.mark.parametrize(
    ("params", "field", "constraint", "reason"),
    [
        ({"token_sha256": b"\x00" * 31}, "token_sha256", "api_keys_token_sha256_length", "format"),
        ({"token_sha256": None}, "token_sha256", None, "required"),
        ({"label": "x" * 256}, "label", "api_keys_label_length", "too long"),
        ({"scope": "admin"}, "scope", "api_keys_scope_valid", "invalid"),
        ({"scope": None}, "scope", None, "required"),
    ],
    ids=["short hash", "no hash", "long label", "unknown scope", "no scope"],
)
def test_a_broken_rule_is_lg007_naming_field_and_constraint(
    conn, params, field, constraint, reason
):
    given = {"app": "core", "token_sha256": digest("t"), **params}
    with pytest.raises(psycopg.Error) as err:
        one(conn, "create_api_key", **given)
    assert err.value.sqlstate == "LG007"
    detail = json.loads(err.value.diag.message_detail or "{}")
    assert detail == {"field": field, "constraint": constraint, "reason": reason}
    assert field in str(err.value)
    assert stored_keys(conn) == 0


def test_the_same_hash_twice_is_lg007_and_the_first_key_stays(conn):
    one(conn, "create_api_key", app="core", token_sha256=digest("same"))
    with pytest.raises(psycopg.Error) as err:
        one(conn, "create_api_key", app="example_app", token_sha256=digest("same"))
    assert err.value.sqlstate == "LG007"
    assert json.loads(err.value.diag.message_detail or "{}") == {
        "field": "token_sha256",
        "constraint": "api_keys_token_sha256_unique",
        "reason": "duplicate key",
    }
    assert one(conn, "api_key_lookup", token_sha256=digest("same"))["app"] == "core"


def test_the_message_shows_the_rule_from_the_catalog(conn):
    with pytest.raises(psycopg.Error) as err:
        one(conn, "create_api_key", app="core", token_sha256=digest("t"), scope="admin")
    message = err.value.diag.message_primary or ""
    assert "api_keys_scope_valid" in message and "'audit'" in message


def test_the_constraint_is_the_only_rule(conn):
    """Widen the table's label rule: create_api_key follows it, holding no copy of its own."""
    conn.execute(
        "ALTER TABLE ledger.api_keys DROP CONSTRAINT api_keys_label_length,"
        " ADD CONSTRAINT api_keys_label_length CHECK (length(label) <= 300)"
    )
    key = one(conn, "create_api_key", app="core", token_sha256=digest("t"), label="x" * 300)
    assert key["label"] == "x" * 300
    with pytest.raises(psycopg.Error) as err:
        one(conn, "create_api_key", app="core", token_sha256=digest("u"), label="x" * 301)
    assert err.value.sqlstate == "LG007"
    assert "300" in (err.value.diag.message_primary or "")


def test_an_unknown_app_is_lg011(conn):
    with pytest.raises(psycopg.Error) as err:
        one(conn, "create_api_key", app="no_such_app", token_sha256=digest("t"))
    assert err.value.sqlstate == "LG011"
    assert stored_keys(conn) == 0
