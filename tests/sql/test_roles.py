"""Roles and privileges: who may call what, and that the journal is append-only."""

from __future__ import annotations

import psycopg
import pytest

from .helpers import call, one, post

TABLES = ["apps", "operations", "accounts", "entries", "holds"]


@pytest.fixture
def funded(conn):
    entry = post(conn, "alice", "CREDIT_ADD", "seed", amount=50)
    return entry["entry_id"]


def _fails(conn, statement, params=None):
    with pytest.raises(psycopg.Error) as err:
        conn.execute(statement, params)
    return err.value.sqlstate


@pytest.mark.parametrize("table", TABLES)
def test_ledger_app_cannot_write_tables(conn, funded, table):
    conn.execute("SET ROLE ledger_app")
    assert _fails(conn, f"DELETE FROM ledger.{table}") == "42501"
    assert (
        _fails(
            conn, f"UPDATE ledger.{table} SET {'app' if table != 'accounts' else 'owner_id'} = 'x'"
        )
        == "42501"
    )
    assert _fails(conn, f"TRUNCATE ledger.{table} CASCADE") == "42501"
    # ...but reads them (reports and audits).
    conn.execute(f"SELECT count(*) FROM ledger.{table}")


def test_ledger_app_cannot_insert_entries_or_accounts(conn):
    conn.execute("SET ROLE ledger_app")
    assert (
        _fails(conn, "INSERT INTO ledger.accounts (owner_id, balance) VALUES ('mint', 1000)")
        == "42501"
    )
    assert (
        _fails(
            conn,
            "INSERT INTO ledger.entries (owner_id, app, operation, amount, balance, created_at, created_by)"
            " VALUES ('mint', 'core', 'CREDIT_ADD', 1000, 1000, now(), 'me')",
        )
        == "42501"
    )


def test_ledger_app_uses_the_api_and_is_recorded_as_writer(conn, funded):
    conn.execute("SET ROLE ledger_app")
    entry = post(conn, "alice", "CREDIT_SPEND", "spend", amount=5)
    assert entry["balance"] == 45
    assert one(conn, "get_entry", entry_id=entry["entry_id"])["created_by"] == "ledger_app"
    assert one(conn, "get_balance", owner_id="alice")["balance"] == 45


def test_a_caller_cannot_choose_the_writer(conn, funded):
    """ledger.writer names the writer only in a session of the schema owner
    (a call Citus runs on the owner's worker): a caller who sets it is still
    recorded as itself."""
    conn.execute("SET ROLE ledger_app")
    conn.execute("SET ledger.writer = 'someone_else'")
    entry = post(conn, "alice", "CREDIT_SPEND", "forged", amount=1)
    assert one(conn, "get_entry", entry_id=entry["entry_id"])["created_by"] == "ledger_app"


def test_no_caller_role_may_use_schema_ledger_shard(conn, funded):
    """What post_entry, create_hold and grant_credits run on the owner's shard
    (on Citus, the distributed functions) is its owner's alone: callers go
    through the entry points of schema ledger."""
    row = conn.execute(
        "SELECT array_agg(a.grantee::regrole::text) FILTER (WHERE a.grantee <> n.nspowner),"
        " bool_or(a.grantee = 0)"
        " FROM pg_namespace n LEFT JOIN LATERAL aclexplode(n.nspacl) a ON true"
        " WHERE n.nspname = 'ledger_shard'"
    ).fetchone()
    assert row is not None and row[0] is None and not row[1], row  # no one but the owner
    for role in ("ledger_app", "ledger_reader", "ledger_owner"):
        conn.execute(f"SET ROLE {role}")
        assert (
            _fails(
                conn,
                "SELECT * FROM ledger_shard.post_entry('alice', 'core', 'CREDIT_ADD', 'x', 1,"
                " '{}', 'forged')",
            )
            == "42501"
        ), role
        conn.execute("RESET ROLE")


def test_only_the_owner_role_defines_apps_and_operations(conn):
    for role in ("ledger_app", "ledger_reader"):
        conn.execute(f"SET ROLE {role}")
        assert _fails(conn, "SELECT ledger.define_app('sneaky')") == "42501"
        assert (
            _fails(
                conn,
                "SELECT ledger.define_operation('core', 'FREE_MONEY', 'credit', default_amount => 1000)",
            )
            == "42501"
        )
        conn.execute("RESET ROLE")
    conn.execute("SET ROLE ledger_owner")
    assert one(conn, "define_app", app="allowed")["app"] == "allowed"


def test_reader_reads_and_writes_nothing(conn, funded):
    conn.execute("SET ROLE ledger_reader")
    assert one(conn, "get_balance", owner_id="alice")["balance"] == 50
    assert len(call(conn, "list_entries", owner_id="alice")) == 1
    assert call(conn, "verify") == []
    assert (
        _fails(conn, "SELECT ledger.post_entry('alice', 'core', 'CREDIT_ADD', 'reader-key', 1)")
        == "42501"
    )
    assert _fails(conn, "INSERT INTO ledger.apps (app) VALUES ('x')") == "42501"


@pytest.mark.parametrize("role", ["ledger_owner", "ledger_app", "ledger_reader"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.entries SET amount = amount + 1",
        "DELETE FROM ledger.entries",
        "TRUNCATE ledger.entries CASCADE",
    ],
)
def test_no_ledger_role_changes_an_entry(conn, funded, role, statement):
    conn.execute(f"SET ROLE {role}")
    # The owner is stopped by the append-only trigger, the others by privileges.
    assert _fails(conn, statement) in {"LG013", "42501"}
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT count(*), sum(amount) FROM ledger.entries").fetchone() == (1, 50)


def test_even_a_superuser_update_hits_the_trigger(conn, funded):
    assert _fails(conn, "UPDATE ledger.entries SET amount = 1") == "LG013"


def test_verify_reports_a_planted_discrepancy(conn, funded):
    assert call(conn, "verify") == []
    conn.execute("SET ROLE ledger_schema_owner")
    conn.execute("UPDATE ledger.accounts SET balance = balance + 7 WHERE owner_id = 'alice'")
    conn.execute("RESET ROLE")
    rows = call(conn, "verify")
    assert {r["check_name"] for r in rows} == {
        "balance_matches_entries",
        "last_entry_balance",
        "balance_matches_grants",
    }
    assert {r["owner_id"] for r in rows} == {"alice"}


def test_functions_ignore_a_hostile_search_path(conn, funded):
    # Objects named like the ledger's, planted in a schema searched first.
    conn.execute("CREATE SCHEMA evil")
    conn.execute("CREATE TABLE evil.accounts (owner_id text, balance bigint)")
    conn.execute("CREATE TABLE evil.entries (entry_id bigint)")
    conn.execute(
        "CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql"
        " AS $$ SELECT '2000-01-01'::timestamptz $$"
    )
    conn.execute(
        "CREATE FUNCTION evil.text_eq_evil(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$"
    )
    conn.execute(
        "CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq_evil)"
    )
    conn.execute("GRANT USAGE ON SCHEMA evil TO PUBLIC")
    conn.execute("SET search_path = evil, pg_catalog, public")
    entry = post(conn, "alice", "CREDIT_SPEND", "evil-1", amount=5)
    assert entry["balance"] == 45
    assert entry["created_at"].year > 2000
    assert one(conn, "get_balance", owner_id="alice")["balance"] == 45
    assert one(conn, "get_balance", owner_id="nobody")["balance"] == 0
    assert conn.execute("SELECT count(*) FROM evil.accounts").fetchone() == (0,)
