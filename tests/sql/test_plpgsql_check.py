"""Static checks of every PL/pgSQL function with plpgsql_check.

plpgsql_check compiles each function body against the live catalog and
reports what PostgreSQL itself only finds when a line runs: unknown columns
or functions, wrong types in assignments, unreachable code, unused
variables. Every function of the ledger's schemas is checked (trigger
functions with the table they are attached to). An error fails the test; a
warning fails it too, unless it is listed in ``EXPLAINED`` with the reason
it stays.

The extension is Debian's ``postgresql-<major>-plpgsql-check`` (``.ci/run``
installs it). Where it is not installed the test is skipped with that reason,
except in CI (``CI`` set), where a missing extension is a failure.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

SCHEMAS = ("ledger", "example_app")

# (function, message) -> why the warning is not a defect.
EXPLAINED: dict[tuple[str, str], str] = {}
# Writing an assignment (`v_x := f(...)`) instead of `PERFORM f(...)` is the
# cheap path of PL/pgSQL: an assignment of a simple expression skips the
# executor start-up that PERFORM (a full query) pays on every call. The
# variables that receive such a call's result are never read on purpose.
ASSIGNMENT_AS_CALL = (
    "an assignment used as a cheap call (cheaper than PERFORM); never read on purpose"
)
_ASSIGNED = {"v_locked", "v_checked"}


def _explained(function: str, message: str) -> str | None:
    if (function, message) in EXPLAINED:
        return EXPLAINED[(function, message)]
    for name in _ASSIGNED:
        if message == f'never read variable "{name}"':
            return ASSIGNMENT_AS_CALL
    return None


@pytest.fixture
def checked(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    available = conn.execute(
        "SELECT count(*) FROM pg_catalog.pg_available_extensions WHERE name = 'plpgsql_check'"
    ).fetchone()
    if not available or not available[0]:
        if os.environ.get("CI"):
            pytest.fail("plpgsql_check is not installed (.ci/run installs it in CI)")
        pytest.skip(
            "the plpgsql_check extension is not installed "
            "(Debian: apt-get install postgresql-<major>-plpgsql-check)"
        )
    conn.execute("CREATE EXTENSION plpgsql_check")
    return conn


def _findings(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, str]]:
    """(function, level, message, where) for every finding in the ledger's schemas."""
    rows = conn.execute(
        """
        WITH f AS (
            SELECT p.oid, p.oid::regprocedure::text AS name,
                   -- A trigger function is checked against a table it is attached to.
                   (SELECT t.tgrelid FROM pg_catalog.pg_trigger t
                    WHERE t.tgfoid = p.oid ORDER BY t.tgrelid LIMIT 1) AS relid,
                   p.prorettype = 'trigger'::regtype AS is_trigger
            FROM pg_catalog.pg_proc p
            JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
            JOIN pg_catalog.pg_language l ON l.oid = p.prolang
            WHERE l.lanname = 'plpgsql' AND n.nspname = ANY(%s)
        )
        SELECT f.name, r.level, r.message,
               coalesce(r.functionid::text, '') || ':' || coalesce(r.lineno::text, '')
        FROM f
        CROSS JOIN LATERAL plpgsql_check_function_tb(
            f.oid, coalesce(f.relid, 0), extra_warnings => true) r
        WHERE NOT f.is_trigger OR f.relid IS NOT NULL
        ORDER BY 1, 4
        """,
        (list(SCHEMAS),),
    ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def test_every_plpgsql_function_passes_plpgsql_check(checked: psycopg.Connection[Any]) -> None:
    unexplained = [
        f"{function} {where}: {level}: {message}"
        for function, level, message, where in _findings(checked)
        if level == "error" or _explained(function, message) is None
    ]
    assert unexplained == []


def test_every_trigger_function_is_attached_and_checked(checked: psycopg.Connection[Any]) -> None:
    unattached = checked.execute(
        """
        SELECT p.oid::regprocedure::text
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%s) AND p.prorettype = 'trigger'::regtype
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t WHERE t.tgfoid = p.oid)
        """,
        (list(SCHEMAS),),
    ).fetchall()
    assert unattached == []


def test_the_check_finds_a_planted_error(checked: psycopg.Connection[Any]) -> None:
    """The check is real: a function that names a missing column is reported."""
    checked.execute(
        """
        CREATE FUNCTION ledger._planted() RETURNS bigint LANGUAGE plpgsql AS $$
        BEGIN RETURN (SELECT a.no_such_column FROM ledger.accounts a LIMIT 1); END $$
        """
    )
    findings = [f for f in _findings(checked) if f[0].startswith("ledger._planted")]
    assert [f[1] for f in findings] == ["error"]
    assert "no_such_column" in findings[0][2]
