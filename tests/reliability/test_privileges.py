"""Privileges and hostile input at the SQL level (tests/sql/test_roles.py
covers the basics: table writes refused to ledger_app, the append-only
trigger, define_* refused to app and reader, one hostile search_path).

This file goes further: the exact set of functions each role may execute
(an internal writer such as ledger._apply must never be callable by a
service), every SECURITY DEFINER function pinned, a role outside the ledger
shut out, the journal refusing every other statement form that changes rows
(writable CTE, MERGE, cascaded TRUNCATE), a search_path that plants tables,
functions, operators, a type and temporary tables in front of pg_catalog
while ledger_app calls every function, and owner ids made of quotes,
semicolons, backslashes, format directives and unicode stored literally.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from ledger_py import queries
from ledger_py.queries import ALL_CALLS, NOT_WRAPPED
from tests.sql.helpers import call, one, post

from .invariants import ledger_problems


def _granted_to(role: str) -> set[str]:
    """The functions the API list (ledger_py/queries.py) grants a role,
    wrapped or not (the internal helpers an inlined read runs as the caller
    among them); tests/sql/test_catalog.py checks each signature's grants."""
    names = {c.name for c in ALL_CALLS if role in c.callers}
    names |= {entry.signature.partition("(")[0] for entry in NOT_WRAPPED if role in entry.callers}
    return names


APP_FUNCTIONS = _granted_to(queries.APP)
READER_FUNCTIONS = _granted_to(queries.READER)
OWNER_FUNCTIONS = _granted_to(queries.OWNER)


def test_the_roles_are_nested_as_documented() -> None:
    """Services read what readers read; operators read as readers and define."""
    assert READER_FUNCTIONS < APP_FUNCTIONS
    assert READER_FUNCTIONS < OWNER_FUNCTIONS
    assert "_apply" not in APP_FUNCTIONS and "define_app" not in APP_FUNCTIONS
    assert {"define_app", "define_operation"} <= OWNER_FUNCTIONS - READER_FUNCTIONS


def _fails(conn: psycopg.Connection[Any], statement: str, params: Any = None) -> str | None:
    with pytest.raises(psycopg.Error) as err:
        conn.execute(statement, params)
    return err.value.sqlstate


def _stranger(conn: psycopg.Connection[Any]) -> None:
    """A login role outside the ledger (roles are cluster-wide: made once)."""
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stranger') THEN"
        " CREATE ROLE stranger LOGIN; END IF; END $$"
    )


def _executable(conn: psycopg.Connection[Any], role: str) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'ledger' AND has_function_privilege(%s, p.oid, 'EXECUTE')",
        (role,),
    ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize(
    ("role", "functions"),
    [
        ("ledger_app", APP_FUNCTIONS),
        ("ledger_reader", READER_FUNCTIONS),
        ("ledger_owner", OWNER_FUNCTIONS),
        ("stranger", set()),  # PUBLIC gets nothing
    ],
)
def test_each_role_executes_exactly_its_functions(
    conn: psycopg.Connection[Any], role: str, functions: set[str]
) -> None:
    _stranger(conn)
    assert _executable(conn, role) == functions


def test_every_overload_of_a_writer_is_granted_alike(conn: psycopg.Connection[Any]) -> None:
    # A jsonb/text overload left without EXECUTE would fail only for some callers.
    rows = conn.execute(
        "SELECT p.proname, bool_and(has_function_privilege('ledger_app', p.oid, 'EXECUTE')),"
        "       bool_or(has_function_privilege('ledger_app', p.oid, 'EXECUTE'))"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'ledger' GROUP BY p.proname"
    ).fetchall()
    assert [name for name, every, some in rows if every != some] == []


def test_security_definer_functions_pin_their_search_path(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'ledger' AND p.prosecdef"
    ).fetchall()
    assert len(rows) >= 20
    unpinned = [name for name, config in rows if config != ["search_path=pg_catalog, pg_temp"]]
    assert unpinned == []
    owners = conn.execute(
        "SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ledger'"
    ).fetchall()
    assert owners == [("ledger_schema_owner",)]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM ledger._apply('mint', 'core', 'CREDIT_ADD', NULL, 1000000, 'k', NULL, '{}')",
        "SELECT * FROM ledger._lock_account('a', true)",
        "SELECT ledger._lock_accounts(ARRAY['a'], true)",
        "SELECT * FROM ledger._post_entries('[]')",
        "SELECT ledger.create_api_key('core', sha256('x'))",
        "SELECT ledger.revoke_api_key('key_abcdefgh')",
        "SELECT * FROM ledger.list_api_keys()",
        "SELECT * FROM ledger.api_keys",
        "INSERT INTO ledger.holds (owner_id, app, operation, amount, idempotency_key, fingerprint,"
        " created_at, expires_at, created_by) VALUES ('a', 'core', 'CREDIT_SPEND', 1, 'k',"
        " md5('')::uuid, now(), now() + interval '1 hour', 'me')",
        "INSERT INTO ledger.operations (app, operation, direction, default_amount)"
        " VALUES ('core', 'FREE_MONEY', 'credit', 1000000)",
        "INSERT INTO ledger.apps (app) VALUES ('rogue')",
        "UPDATE ledger.sql_files SET sha256 = 'x'",
        "CREATE TABLE ledger.planted (x int)",
        "CREATE FUNCTION ledger.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "SELECT nextval('ledger.transfer_id_seq')",
    ],
)
def test_ledger_app_reaches_nothing_internal(conn: psycopg.Connection[Any], statement: str) -> None:
    conn.execute("SET ROLE ledger_app")
    assert _fails(conn, statement) == "42501"


def test_a_service_login_cannot_become_the_owner(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """A real login that is a member of ledger_app (as services are), not SET
    ROLE from a superuser session: it posts, and cannot take any other role."""
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_svc') THEN"
        " CREATE ROLE ledger_svc LOGIN IN ROLE ledger_app; END IF; END $$"
    )
    try:
        service = psycopg.connect(db_url, user="ledger_svc", autocommit=True)
    except psycopg.OperationalError:  # an outside server that wants a password
        pytest.skip("cannot log in as a new role on this server")
    with service:
        assert post(service, "alice", "CREDIT_ADD", "svc-1", amount=5)["balance"] == 5
        assert one(service, "get_entry", entry_id=1)["created_by"] == "ledger_svc"
        for statement in [
            "SET ROLE ledger_owner",
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION ledger_owner",
            "SELECT ledger.define_app('svc_app')",
            "SELECT ledger.define_operation('core', 'FREE_MONEY', 'credit', 1000)",
            "SELECT * FROM ledger.list_api_keys()",
            "ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only",
            "UPDATE ledger.accounts SET balance = 1000000",
        ]:
            assert _fails(service, statement) == "42501", statement
    assert conn.execute("SELECT balance FROM ledger.accounts").fetchall() == [(5,)]


@pytest.mark.parametrize("role", ["ledger_reader", "stranger"])
def test_reader_and_stranger_write_nothing(conn: psycopg.Connection[Any], role: str) -> None:
    post(conn, "alice", "CREDIT_ADD", "seed", amount=50)
    _stranger(conn)
    conn.execute(f"SET ROLE {role}")
    for statement in [
        'SELECT * FROM ledger.post_entries(\'[{"owner_id": "a", "app": "core",'
        ' "operation": "CREDIT_ADD", "idempotency_key": "r", "amount": 5}]\')',
        "SELECT * FROM ledger.create_hold('alice', 'core', 'CREDIT_SPEND', 'r', 5)",
        "SELECT * FROM ledger.transfer('alice', 'bob', 5, 'core', 'r')",
        "SELECT * FROM ledger.reverse_entry(1, 'core', 'r')",
        "SELECT * FROM ledger.capture_hold(1, 'core')",
        "SELECT * FROM ledger.release_hold(1, 'core')",
    ]:
        assert _fails(conn, statement) == "42501", statement
    if role == "stranger":  # not even reads: no USAGE on the schema
        assert _fails(conn, "SELECT * FROM ledger.get_balance('alice')") == "42501"
        assert _fails(conn, "SELECT count(*) FROM ledger.entries") == "42501"
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone() == (1,)


@pytest.mark.parametrize("role", ["ledger_owner", "ledger_app", "ledger_reader"])
@pytest.mark.parametrize(
    "statement",
    [
        "WITH gone AS (DELETE FROM ledger.entries RETURNING 1) SELECT count(*) FROM gone",
        "WITH changed AS (UPDATE ledger.entries SET metadata = '{\"x\": 1}' RETURNING 1)"
        " SELECT count(*) FROM changed",
        "MERGE INTO ledger.entries e USING (SELECT 1 AS id) s ON e.entry_id = s.id"
        " WHEN MATCHED THEN DELETE",
        "MERGE INTO ledger.entries e USING (SELECT 1 AS id) s ON e.entry_id = s.id"
        " WHEN MATCHED THEN UPDATE SET amount = 1000000",
        "DELETE FROM ledger.entries e USING ledger.accounts a WHERE a.owner_id = e.owner_id",
        "TRUNCATE ledger.accounts CASCADE",
        "TRUNCATE ledger.holds, ledger.entries, ledger.accounts",
        "DELETE FROM ledger.accounts",
    ],
)
def test_no_statement_form_changes_the_journal(
    conn: psycopg.Connection[Any], role: str, statement: str
) -> None:
    post(conn, "alice", "CREDIT_ADD", "seed", amount=50)
    if conn.info.server_version < 150000 and statement.startswith("MERGE"):
        pytest.skip("MERGE needs PostgreSQL 15")
    conn.execute(f"SET ROLE {role}")
    # The owner meets the append-only trigger (or the accounts' foreign key),
    # the others lack the privilege.
    assert _fails(conn, statement) in {"LG013", "42501", "23503"}
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT count(*), sum(amount) FROM ledger.entries").fetchone() == (1, 50)
    assert ledger_problems(conn) == []


SCHEMA_OWNER = "ledger_schema_owner"

# What whoever can act as a table's owner could do to the journal: each is
# refused (42501) to every role an app or an operator can reach.
OWNER_ONLY_STATEMENTS = [
    "ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only",
    "ALTER TABLE ledger.entries DISABLE TRIGGER ALL",
    "DROP TRIGGER entries_append_only ON ledger.entries",
    "ALTER TABLE ledger.entries ADD COLUMN note text",
    "ALTER TABLE ledger.accounts DROP CONSTRAINT accounts_balance_non_negative",
    "DROP TABLE ledger.entries CASCADE",
    "CREATE OR REPLACE FUNCTION ledger.refuse_entry_change() RETURNS trigger"
    " LANGUAGE plpgsql AS $f$ BEGIN RETURN NEW; END $f$",
    "CREATE TABLE ledger.planted (i int)",
    "ALTER SCHEMA ledger RENAME TO ledger_old",
    "SET session_replication_role = replica",
    "GRANT ledger_schema_owner TO CURRENT_USER",
]


def _journal_intact(conn: psycopg.Connection[Any]) -> None:
    conn.execute("RESET ROLE")
    triggers = conn.execute(
        "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'ledger.entries'::regclass"
        " AND NOT tgisinternal ORDER BY tgname"
    ).fetchall()
    assert triggers == [("entries_append_only", "O"), ("entries_no_truncate", "O")]
    assert conn.execute("SELECT count(*), sum(amount) FROM ledger.entries").fetchone() == (1, 50)


@pytest.mark.parametrize("statement", OWNER_ONLY_STATEMENTS)
@pytest.mark.parametrize("role", ["ledger_owner", "ledger_app", "ledger_reader"])
def test_no_app_or_operator_role_can_alter_the_journal(
    conn: psycopg.Connection[Any], role: str, statement: str
) -> None:
    post(conn, "alice", "CREDIT_ADD", "seed", amount=50)
    conn.execute(f"SET ROLE {role}")
    assert _fails(conn, statement) == "42501", statement
    _journal_intact(conn)


def test_an_operator_login_defines_apps_but_cannot_alter_the_journal(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """A real login that is a member of ledger_owner (as an operator is): it
    defines apps and operations and manages API keys, and every way to the
    journal's triggers is closed, as itself and after SET ROLE ledger_owner."""
    post(conn, "alice", "CREDIT_ADD", "seed", amount=50)
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_operator') THEN"
        " CREATE ROLE ledger_operator LOGIN IN ROLE ledger_owner; END IF; END $$"
    )
    try:
        operator = psycopg.connect(db_url, user="ledger_operator", autocommit=True)
    except psycopg.OperationalError:  # an outside server that wants a password
        pytest.skip("cannot log in as a new role on this server")
    with operator:
        assert one(operator, "define_app", app="op_app")["app"] == "op_app"
        operator.execute("SELECT ledger.define_operation('op_app', 'OP_SPEND', 'debit', 2)")
        operator.execute("SELECT ledger.create_api_key('op_app', sha256('t'::bytea))")
        assert operator.execute("SELECT count(*) FROM ledger.list_api_keys()").fetchone() == (1,)
        assert call(operator, "verify") == []
        for become in ("RESET ROLE", "SET ROLE ledger_owner"):
            operator.execute(become)
            for statement in OWNER_ONLY_STATEMENTS:
                assert _fails(operator, statement) == "42501", (become, statement)
            for statement in [
                "UPDATE ledger.accounts SET balance = 1000000",
                "INSERT INTO ledger.apps (app) VALUES ('planted')",
                # A SET ROLE test from a superuser session proves nothing: SET ROLE
                # is checked against the login, which is why this test logs in.
                "SET ROLE ledger_schema_owner",
                "SET SESSION AUTHORIZATION ledger_schema_owner",
            ]:
                assert _fails(operator, statement) == "42501", (become, statement)
    _journal_intact(conn)


def test_the_schema_owner_owns_everything_and_no_reachable_role_acts_as_it(
    conn: psycopg.Connection[Any],
) -> None:
    assert conn.execute(
        "SELECT rolcanlogin, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s",
        (SCHEMA_OWNER,),
    ).fetchone() == (False, False, False)
    owners = conn.execute(
        "SELECT DISTINCT pg_get_userbyid(o) FROM ("
        " SELECT nspowner FROM pg_namespace WHERE nspname IN ('ledger', 'example_app')"
        " UNION ALL SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname IN ('ledger', 'example_app')"
        " UNION ALL SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        "  WHERE n.nspname IN ('ledger', 'example_app')"
        " UNION ALL SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        "  WHERE n.nspname IN ('ledger', 'example_app')) owned(o)"
    ).fetchall()
    assert owners == [(SCHEMA_OWNER,)]
    # No role an app or an operator logs in as (a member of ledger_owner,
    # ledger_app or ledger_reader, or one of those) can act as the owner.
    reachable = conn.execute(
        "SELECT r.rolname FROM pg_roles r WHERE NOT r.rolsuper"
        " AND (pg_has_role(r.oid, 'ledger_owner', 'MEMBER')"
        "      OR pg_has_role(r.oid, 'ledger_app', 'MEMBER')"
        "      OR pg_has_role(r.oid, 'ledger_reader', 'MEMBER'))"
        " AND pg_has_role(r.oid, %s, 'MEMBER')",
        (SCHEMA_OWNER,),
    ).fetchall()
    assert reachable == []


# ---- a hostile search_path ----------------------------------------------------------------------

EVIL_OBJECTS = [
    # Tables named like the ledger's, with rows that would change every answer.
    "CREATE TABLE evil.accounts (owner_id text, balance bigint, created_at timestamptz,"
    " updated_at timestamptz)",
    "INSERT INTO evil.accounts VALUES ('alice', 999999, now(), now())",
    "CREATE TABLE evil.entries (LIKE ledger.entries)",
    "CREATE TABLE evil.holds (LIKE ledger.holds)",
    "CREATE TABLE evil.operations (LIKE ledger.operations)",
    "CREATE TABLE evil.calls (fn text)",
    # Functions of pg_catalog's names that log their call and lie.
    "CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('clock_timestamp'); RETURN '2000-01-01'; END $$",
    "CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('now'); RETURN '2000-01-01'; END $$",
    "CREATE FUNCTION evil.length(text) RETURNS integer LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('length'); RETURN 1; END $$",
    "CREATE FUNCTION evil.md5(text) RETURNS text LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('md5'); RETURN md5('x'); END $$",
    # (PL/pgSQL cannot take VARIADIC "any": exact signatures of the ledger's calls instead.)
    "CREATE FUNCTION evil.json_build_object(text, text, text, text) RETURNS json LANGUAGE plpgsql"
    " AS $$ BEGIN INSERT INTO evil.calls VALUES ('json_build_object'); RETURN '{}'; END $$",
    "CREATE FUNCTION evil.json_build_object(VARIADIC text[]) RETURNS json LANGUAGE plpgsql"
    " AS $$ BEGIN INSERT INTO evil.calls VALUES ('json_build_object'); RETURN '{}'; END $$",
    "CREATE FUNCTION evil.jsonb_build_array(text, text, text, numeric, jsonb) RETURNS jsonb"
    " LANGUAGE plpgsql AS $$ BEGIN INSERT INTO evil.calls VALUES ('jsonb_build_array');"
    " RETURN '[]'; END $$",
    "CREATE FUNCTION evil.jsonb_build_array(VARIADIC text[]) RETURNS jsonb LANGUAGE plpgsql"
    " AS $$ BEGIN INSERT INTO evil.calls VALUES ('jsonb_build_array'); RETURN '[]'; END $$",
    "CREATE FUNCTION evil.pg_advisory_xact_lock(bigint) RETURNS void LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('pg_advisory_xact_lock'); END $$",
    "CREATE FUNCTION evil.current_setting(text) RETURNS text LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('current_setting'); RETURN 'evil'; END $$",
    "CREATE FUNCTION evil.sum_step(bigint, bigint) RETURNS bigint LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('sum'); RETURN 0; END $$",
    "CREATE AGGREGATE evil.sum(bigint) (SFUNC = evil.sum_step, STYPE = bigint, INITCOND = '0')",
    # Operators that log and answer wrongly, for the types the ledger compares and adds.
    "CREATE FUNCTION evil.t_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('text ='); RETURN true; END $$",
    "CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.t_eq)",
    "CREATE OPERATOR evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.t_eq)",
    "CREATE FUNCTION evil.b_cmp(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('bigint compare'); RETURN false; END $$",
    "CREATE OPERATOR evil.< (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.b_cmp)",
    "CREATE OPERATOR evil.> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.b_cmp)",
    "CREATE OPERATOR evil.<= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.b_cmp)",
    "CREATE OPERATOR evil.>= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.b_cmp)",
    "CREATE FUNCTION evil.b_add(bigint, bigint) RETURNS bigint LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('bigint +-'); RETURN 424242; END $$",
    "CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.b_add)",
    "CREATE OPERATOR evil.- (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.b_add)",
    "CREATE FUNCTION evil.n_cmp(numeric, numeric) RETURNS boolean LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO evil.calls VALUES ('numeric compare'); RETURN false; END $$",
    "CREATE OPERATOR evil.<= (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.n_cmp)",
    "CREATE OPERATOR evil.> (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.n_cmp)",
    # A type named text: unqualified ::text casts would resolve to it.
    "CREATE TYPE evil.text AS (x int)",
]


@pytest.fixture
def hostile(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """ledger_app, with evil's objects and temporary look-alikes searched before pg_catalog."""
    post(conn, "alice", "CREDIT_ADD", "seed", amount=50)
    conn.execute("CREATE SCHEMA evil")
    for statement in EVIL_OBJECTS:
        conn.execute(statement)
    conn.execute("GRANT USAGE ON SCHEMA evil TO ledger_app")
    conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA evil TO ledger_app")
    conn.execute("SET ROLE ledger_app")
    # Temporary tables: pg_temp is searched first for tables unless placed explicitly.
    conn.execute("CREATE TEMP TABLE accounts (owner_id text, balance bigint)")
    conn.execute("INSERT INTO accounts VALUES ('alice', 777777)")
    conn.execute("CREATE TEMP TABLE entries (LIKE ledger.entries)")
    conn.execute("SET search_path = evil, pg_catalog")
    return conn


def _evil_calls(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("SELECT fn FROM evil.calls").fetchall()]


def test_hostile_search_path_fools_no_function(hostile: psycopg.Connection[Any]) -> None:
    c = hostile
    spent = post(c, "alice", "CREDIT_SPEND", "evil-1", amount=5)
    assert spent["balance"] == 45 and spent["created_at"].year > 2000
    assert one(c, "get_balance", owner_id="alice")["balance"] == 45
    assert one(c, "get_balance", owner_id="nobody")["balance"] == 0
    hold = one(
        c,
        "create_hold",
        owner_id="alice",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="evil-2",
        amount=10,
    )
    balance = one(c, "get_balance", owner_id="alice")
    assert (balance["balance"], balance["held"], balance["available"]) == (45, 10, 35)
    assert one(c, "capture_hold", hold_id=hold["hold_id"], app="core", amount=4)["balance"] == 41
    second = one(
        c,
        "create_hold",
        owner_id="alice",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="evil-3",
        amount=3,
    )
    assert one(c, "release_hold", hold_id=second["hold_id"], app="core")["status"] == "released"
    moved = one(
        c,
        "transfer",
        from_owner="alice",
        to_owner="bob",
        amount=11,
        app="core",
        idempotency_key="evil-4",
    )
    assert (moved["from_balance"], moved["to_balance"]) == (30, 11)
    reversed_rows = call(
        c, "reverse_entry", entry_id=moved["from_entry_id"], app="core", idempotency_key="evil-5"
    )
    assert [r["balance"] for r in reversed_rows] == [41, 0]
    batch = call(
        c,
        "post_entries",
        entries=json.dumps(
            [
                {
                    "owner_id": "carol",
                    "app": "core",
                    "operation": "CREDIT_ADD",
                    "idempotency_key": "evil-6",
                    "amount": 7,
                },
                {
                    "owner_id": "carol",
                    "app": "core",
                    "operation": "CREDIT_SPEND",
                    "idempotency_key": "evil-7",
                    "amount": 2,
                },
            ]
        ),
    )
    assert [r["balance"] for r in batch] == [7, 5]
    assert post(c, "alice", "CREDIT_SPEND", "evil-1", amount=5)["replayed"] is True
    with pytest.raises(psycopg.Error) as err:
        post(c, "alice", "CREDIT_SPEND", "evil-1", amount=6)
    assert err.value.sqlstate == "LG005"
    with pytest.raises(psycopg.Error) as err:
        post(c, "alice", "CREDIT_SPEND", "evil-8", amount=1000)
    assert err.value.sqlstate == "LG001"
    assert len(call(c, "list_entries", owner_id="alice")) == 5
    assert len(call(c, "list_holds", owner_id="alice")) == 2
    assert one(c, "get_entry", entry_id=spent["entry_id"])["amount"] == -5
    assert one(c, "get_hold", hold_id=hold["hold_id"])["status"] == "captured"
    assert call(c, "verify") == []
    assert {r["operation"] for r in call(c, "list_operations", app="core")} >= {"CREDIT_ADD"}
    assert c.execute("SELECT ledger.balance_at('alice', '2100-01-01')").fetchone() == (41,)
    assert _evil_calls(c) == []
    c.execute("RESET ROLE")
    c.execute("SET search_path = public")
    assert ledger_problems(c) == []


@pytest.mark.parametrize(
    "statement,state",
    [
        ("SELECT * FROM ledger.get_balance('')", "LG007"),
        ("SELECT * FROM ledger.get_balance(repeat('x', 256))", "LG007"),
        ("SELECT * FROM ledger.post_entry('', 'core', 'CREDIT_ADD', 'k')", "LG007"),
        ("SELECT * FROM ledger.post_entry('a', 'core', 'CREDIT_ADD', 'k', 0)", "LG006"),
        (
            "SELECT * FROM ledger.post_entry('a', 'core', 'CREDIT_ADD', 'k', metadata => '[1]')",
            "LG007",
        ),
        ("SELECT * FROM ledger.list_entries('a', max_rows => 0)", "LG007"),
        ("SELECT * FROM ledger.get_entry(-1)", "LG008"),
        ('SELECT * FROM ledger.post_entries(\'[{"owner_id": ""}]\')', "LG007"),
    ],
)
def test_hostile_search_path_keeps_error_codes(
    hostile: psycopg.Connection[Any], statement: str, state: str
) -> None:
    """Error paths too: a planted type named text, json_build_object or length
    must not turn a documented error into another one."""
    assert _fails(hostile, statement) == state
    assert _evil_calls(hostile) == []


# ---- owner ids stored literally ---------------------------------------------------------------

STRANGE_OWNERS = [
    "Robert'); DROP TABLE ledger.entries;--",
    "' OR '1'='1",
    '"; DELETE FROM ledger.accounts; --',
    "back\\slash\\\\x00\\u0000",
    "%s %(owner_id)s $1 {0} %%",
    "semi;colon;;",
    "$$ dollar $$ quoted $fn$",
    "E'\\x41'",
    "tab\there\nnewline\rreturn",
    " leading and trailing ",
    "a",
    "A",
    "a ",
    "é",  # precomposed
    "e\u0301",  # e + combining acute: a different owner
    "\u202eevil\u202c",  # right-to-left override
    "\ufeffbom",
    "zero\u200bwidth",
    "😀🏳️‍🌈",
    "日本語のオーナー",
    "\U0010fffd\U0001f600" * 10,
    "\U0001d518" * 255,  # 255 characters, 1020 bytes
]


def test_strange_owner_ids_are_stored_literally(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET ROLE ledger_app")
    for index, owner in enumerate(STRANGE_OWNERS):
        entry = post(conn, owner, "CREDIT_ADD", f"strange-{index}", amount=index + 1)
        assert entry["owner_id"] == owner
    batch = call(
        conn,
        "post_entries",
        entries=json.dumps(
            [
                {
                    "owner_id": owner,
                    "app": "core",
                    "operation": "CREDIT_SPEND",
                    "idempotency_key": f"strange-batch-{index}",
                    "amount": 1,
                }
                for index, owner in enumerate(STRANGE_OWNERS)
            ]
        ),
    )
    assert [r["owner_id"] for r in batch] == STRANGE_OWNERS
    moved = one(
        conn,
        "transfer",
        from_owner=STRANGE_OWNERS[-1],
        to_owner=STRANGE_OWNERS[0],
        amount=5,
        app="core",
        idempotency_key="strange-t",
    )
    assert moved["to_balance"] == 5
    conn.execute("RESET ROLE")
    stored = {
        r[0]: r[1] for r in conn.execute("SELECT owner_id, balance FROM ledger.accounts").fetchall()
    }
    assert len(stored) == len(STRANGE_OWNERS)  # no two ids collapsed into one
    for index, owner in enumerate(STRANGE_OWNERS):
        expected = index + (5 if index == 0 else 0) - (5 if index == len(STRANGE_OWNERS) - 1 else 0)
        assert stored[owner] == expected, owner
        assert one(conn, "get_balance", owner_id=owner)["balance"] == expected
        assert {r["owner_id"] for r in call(conn, "list_entries", owner_id=owner)} == {owner}
    assert conn.execute("SELECT to_regclass('ledger.entries')").fetchone() == ("ledger.entries",)
    assert ledger_problems(conn) == []


def test_owner_id_of_256_characters_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.Error) as err:
        post(conn, "\U0001d518" * 256, "CREDIT_ADD", "long", amount=1)
    assert err.value.sqlstate == "LG007"
