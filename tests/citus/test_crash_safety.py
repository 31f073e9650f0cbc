"""No caller can crash the coordinator through a distributed function.

Citus 12.1 kills the coordinator's backend (signal 11; the server then
restarts every session) when it plans a call of a function distributed by an
argument whose value is NULL (it hashes the NULL), or a call from a subquery,
a CTE or an inlined SQL function (it deparses the planner's rewritten query).
The ledger's distributed functions live in schema ledger_shard, which no
caller role may use; the functions callers use are plain entry points that
refuse a NULL owner (LG007) first. docs/CITUS.md, "A distributed function
crashes Citus 12.1".

The calls are made as a LOGIN member of ledger_app, the way a service
does, while a session opened before must stay connected; migrate refuses a
ledger_shard that a caller may use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ledger_py.migrate import migrate

from ..sql.helpers import login_member, one, post
from . import cluster as citus


@pytest.fixture
def backend() -> str:
    """db_url and conn of this module are on the Citus cluster (tests/conftest.py)."""
    return "citus"


@pytest.fixture
def service(db_url: str, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    role = login_member(conn, "ledger_app")
    with psycopg.connect(
        db_url.replace(f"{citus.SUPERUSER}@", f"{role}@", 1), autocommit=True
    ) as connection:
        yield connection


@pytest.fixture
def bystander(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A session of another client, open before the calls: it must keep its connection."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        pid = connection.execute("SELECT pg_backend_pid()").fetchone()
        yield connection
        assert connection.execute("SELECT pg_backend_pid()").fetchone() == pid


# Every function of the API that takes an owner_id, with valid other arguments.
OWNER_CALLS = [
    (
        "post_entry",
        "app => 'core', operation => 'CREDIT_ADD', idempotency_key => 'k', amount => 1",
    ),
    (
        "post_entry",
        "metadata => '{}'::jsonb, app => 'core', operation => 'CREDIT_ADD',"
        " idempotency_key => 'k', amount => 1",
    ),
    (
        "create_hold",
        "app => 'core', operation => 'CREDIT_SPEND', idempotency_key => 'k', amount => 1",
    ),
    (
        "grant_credits",
        "app => 'core', operation => 'CREDIT_ADD', idempotency_key => 'k', amount => 1",
    ),
    ("get_balance", ""),
    ("list_entries", "max_rows => 5"),
    ("balance_at", "at => now()"),
    ("list_holds", "app => 'core'"),
    ("list_grants", "include_closed => true"),
    ("list_spending", "max_rows => 5"),
]


def test_a_null_owner_is_lg007_and_the_coordinator_survives(
    service: psycopg.Connection[Any], bystander: psycopg.Connection[Any]
) -> None:
    for function, rest in OWNER_CALLS:
        others = f", {rest}" if rest else ""
        literal = f"SELECT * FROM ledger.{function}(owner_id => NULL{others})"
        bound = f"SELECT * FROM ledger.{function}(owner_id => %s{others})"
        attempts: list[tuple[str, tuple[Any, ...], bool]] = [(literal, (), False)]
        # Bound, then prepared: the first five executions of a prepared
        # statement are planned with the value, later ones may use the
        # generic plan.
        attempts += [(bound, (None,), False)] + [(bound, (None,), True)] * 6
        for statement, params, prepare in attempts:
            with pytest.raises(psycopg.Error) as info:
                service.execute(statement, params, prepare=prepare)
            assert info.value.sqlstate == "LG007", (statement, info.value)
    assert service.execute("SELECT 1").fetchone() == (1,)


def test_a_call_from_a_subquery_or_a_cte_is_served(
    service: psycopg.Connection[Any], bystander: psycopg.Connection[Any]
) -> None:
    post(service, "sub", "CREDIT_ADD", "fund", amount=10)
    for statement, expected in [
        (
            "SELECT balance FROM"
            " (SELECT * FROM ledger.post_entry('sub', 'core', 'CREDIT_ADD', 'q1', 5)) s",
            15,
        ),
        (
            "SELECT status FROM"
            " (SELECT * FROM ledger.create_hold('sub', 'core', 'CREDIT_SPEND', 'q2', 1)) s",
            "active",
        ),
        (
            "WITH g AS (SELECT * FROM ledger.grant_credits('sub', 'core', 'CREDIT_ADD', 'q3', 2))"
            " SELECT balance FROM g",
            17,
        ),
        ("WITH b AS (SELECT * FROM ledger.get_balance('sub')) SELECT available FROM b", 16),
        ("SELECT count(*) FROM (SELECT * FROM ledger.list_entries('sub')) e", 3),
    ]:
        assert service.execute(statement).fetchone() == (expected,), statement


def test_a_call_from_an_inlined_function_of_the_callers_own_is_served(
    service: psycopg.Connection[Any], bystander: psycopg.Connection[Any]
) -> None:
    """Any login may create functions in its temporary schema; a SQL one the
    planner inlines puts the call in a subquery."""
    service.execute(
        "CREATE FUNCTION pg_temp.credit(text) RETURNS SETOF ledger.entry_result LANGUAGE sql AS"
        " $$ SELECT * FROM ledger.post_entry($1, 'core', 'CREDIT_ADD', 'inlined', 3) $$"
    )
    service.execute(
        "CREATE FUNCTION pg_temp.balance_of(text) RETURNS SETOF ledger.balance_result"
        " LANGUAGE sql STABLE AS $$ SELECT * FROM ledger.get_balance($1) $$"
    )
    assert service.execute("SELECT balance FROM pg_temp.credit('own')").fetchone() == (3,)
    assert service.execute("SELECT balance FROM pg_temp.balance_of('own')").fetchone() == (3,)


def test_no_caller_role_may_name_a_distributed_function(
    conn: psycopg.Connection[Any],
    service: psycopg.Connection[Any],
    bystander: psycopg.Connection[Any],
) -> None:
    schemas = conn.execute(
        "SELECT DISTINCT p.pronamespace::regnamespace::text"
        " FROM pg_dist_object d JOIN pg_proc p ON p.oid = d.objid"
        " WHERE d.classid = 'pg_proc'::regclass AND d.distribution_argument_index IS NOT NULL"
    ).fetchall()
    assert schemas == [("ledger_shard",)]
    for role in ("ledger_app", "ledger_reader", "ledger_owner", login_member(conn, "ledger_app")):
        row = conn.execute(
            "SELECT has_schema_privilege(%s, 'ledger_shard', 'USAGE')", (role,)
        ).fetchone()
        assert row == (False,), role
    # Refused while the statement is parsed, before Citus plans anything.
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        service.execute(
            "SELECT * FROM ledger_shard.post_entry(NULL, 'core', 'CREDIT_ADD', 'k', 1, '{}', 'me')"
        )
    assert "schema ledger_shard" in str(info.value)
    # The entry points still reach it.
    post(service, "named", "CREDIT_ADD", "f", amount=2)
    h = one(
        service,
        "create_hold",
        owner_id="named",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h",
        amount=1,
    )
    assert h["status"] == "active"


def test_migrate_refuses_a_schema_ledger_shard_that_callers_may_use(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("GRANT USAGE ON SCHEMA ledger_shard TO ledger_app")
    with pytest.raises(psycopg.Error) as info:
        migrate(db_url)
    assert "ledger_shard must be usable by its owner alone" in str(info.value)
    assert "ledger_app" in str(info.value)
    conn.execute("REVOKE USAGE ON SCHEMA ledger_shard FROM ledger_app")
    assert migrate(db_url) == []
