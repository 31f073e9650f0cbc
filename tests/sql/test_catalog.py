"""The one list of the SQL API (ledger_py/queries.py) against PostgreSQL's catalog.

`ALL_CALLS` says, per function the wrapper calls: its name, its parameters
with their SQL types in order, which are optional, what it returns and
which roles may call it; `NOT_WRAPPED` names every other function of schema
ledger that has no leading underscore or that a role may call. Here each
claim is read back from a migrated database: pg_proc (argument names and
types, pronargdefaults), the result type's columns against the result
dataclass's fields (ledger_py/results.py), and has_function_privilege for
each role. A function added, renamed, re-typed or re-granted in sql/
without the list, or the other way round, fails here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ledger_py import queries, results
from ledger_py.queries import ALL_CALLS, NOT_WRAPPED, Call, NotWrapped

ROLES = (
    queries.APP,
    queries.READER,
    queries.OWNER,
    queries.DISPATCHER,
    queries.OPERATOR,
    queries.CONSOLE,
)

# The SQL types (as format_type writes them) each Python field type reads.
SQL_TYPES_OF: dict[type, set[str]] = {
    int: {"bigint", "integer"},
    str: {"text"},
    bool: {"boolean"},
    datetime: {"timestamp with time zone"},
    date: {"date"},
    timedelta: {"interval"},
    dict: {"jsonb"},
    list: {"text[]", "jsonb"},  # a jsonb array (verify_run.sample)
}


@dataclass(frozen=True)
class Function:
    """One row of pg_proc in schema ledger, with what the checks need."""

    name: str
    signature: str  # name(type, ...), types as format_type writes them
    arguments: tuple[str, ...]  # input argument names, in order
    defaults: int  # pronargdefaults: how many trailing arguments are optional
    returns: str  # the result type; for RETURNS TABLE, "record"
    returns_set: bool
    columns: dict[str, str]  # result columns (of a row type or RETURNS TABLE): name -> type
    callers: frozenset[str]  # the roles of ROLES granted EXECUTE


CATALOG_QUERY = """
SELECT p.proname::text,
       array(SELECT format_type(t, NULL)
             FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(t, i) ORDER BY i),
       p.proargnames, p.proargmodes, p.pronargdefaults,
       format_type(p.prorettype, NULL), p.proretset,
       array(SELECT a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod)
             FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
             WHERE t.oid = p.prorettype AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum),
       array(SELECT format_type(t, NULL)
             FROM unnest(p.proallargtypes) WITH ORDINALITY AS u(t, i) ORDER BY i),
       array(SELECT r FROM unnest(%(roles)s::text[]) r
             WHERE has_function_privilege(r, p.oid, 'EXECUTE'))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'ledger'
"""


def _function(row: tuple[Any, ...]) -> Function:
    name, arg_types, names, modes, defaults, returns, returns_set, row_type, all_types, callers = (
        row
    )
    names = list(names or [])
    if modes is None:  # input arguments only; rows (if any) of the result's row type
        arguments = tuple(names[: len(arg_types)])
        columns = dict(column.split(" ", 1) for column in row_type)
    else:  # OUT or TABLE arguments are the result columns
        arguments = tuple(n for n, m in zip(names, modes, strict=True) if m in ("i", "b", "v"))
        columns = {
            n: t for n, m, t in zip(names, modes, all_types, strict=True) if m in ("o", "b", "t")
        }
    return Function(
        name=name,
        signature=f"{name}({', '.join(arg_types)})",
        arguments=arguments,
        defaults=defaults,
        returns=returns,
        returns_set=returns_set,
        columns=columns,
        callers=frozenset(callers),
    )


@dataclass(frozen=True)
class Catalog:
    functions: dict[str, Function]  # by signature
    spelled: dict[str, str]  # an SQL type of the lists -> as format_type writes it

    def signature(self, name: str, sql_types: list[str]) -> str:
        return f"{name}({', '.join(self.spelled[t] for t in sql_types)})"

    def of_call(self, call: Call) -> str:
        return self.signature(call.name, [t for _, t in call.required + call.optional])

    def of_not_wrapped(self, entry: NotWrapped) -> str:
        name, _, rest = entry.signature.partition("(")
        return self.signature(name, [t.strip() for t in rest.rstrip(")").split(",") if t.strip()])


def _listed_types() -> set[str]:
    found = {t for call in ALL_CALLS for _, t in call.required + call.optional}
    found |= {call.returns for call in ALL_CALLS if call.returns}
    for entry in NOT_WRAPPED:
        found |= {t.strip() for t in entry.signature.partition("(")[2].rstrip(")").split(",")}
    return found - {""}


@pytest.fixture(scope="module")
def catalog(template_url: str) -> Catalog:
    """Every function of schema ledger, read once from the migrated template
    (and the connection closed again: tests clone that database)."""
    with psycopg.connect(template_url, autocommit=True) as conn:
        rows = conn.execute(CATALOG_QUERY, {"roles": list(ROLES)}).fetchall()
        # The server spells each type of the lists (timestamptz: timestamp with time zone).
        spelled = {}
        for sql_type in _listed_types():
            row = conn.execute("SELECT format_type(%s::regtype, NULL)", (sql_type,)).fetchone()
            assert row is not None
            spelled[sql_type] = row[0]
    return Catalog({f.signature: f for f in map(_function, rows)}, spelled)


def _field_types(cls: type[Any]) -> dict[str, tuple[type, bool]]:
    """field -> (its type without None, whether None is allowed)."""
    hints = typing.get_type_hints(cls)
    found: dict[str, tuple[type, bool]] = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        if optional:
            [hint] = [a for a in args if a is not type(None)]
        found[field.name] = (typing.get_origin(hint) or hint, optional)
    return found


def _problems_of_call(call: Call, catalog: Catalog) -> list[str]:
    """What the catalog says otherwise than the list about one call."""
    function = catalog.functions.get(catalog.of_call(call))
    if function is None:
        return [f"no function ledger.{catalog.of_call(call)} in the database"]
    problems = []
    names = tuple(name for name, _ in call.required + call.optional)
    if function.arguments != names:
        problems.append(f"parameters {names} in the list, {function.arguments} in SQL")
    if function.defaults != len(call.optional):
        problems.append(
            f"{len(call.optional)} optional parameters in the list,"
            f" {function.defaults} with a DEFAULT in SQL"
        )
    if function.callers != frozenset(call.callers):
        problems.append(
            f"callers {sorted(call.callers)} in the list,"
            f" EXECUTE granted to {sorted(function.callers)}"
        )
    if call.result is None:
        if call.returns is None or function.returns != catalog.spelled[call.returns]:
            problems.append(f"returns {call.returns} in the list, {function.returns} in SQL")
        if function.columns or function.returns_set:
            problems.append("a scalar in the list, rows in SQL")
        return problems
    if call.returns is not None:
        problems.append("a call states a result class or a scalar type, not both")
    cls = call.result
    fields = _field_types(cls)
    for name, (python_type, _) in fields.items():
        sql_type = function.columns.get(name)
        if sql_type is None:
            problems.append(f"{cls.__name__}.{name} is no result column")
        elif sql_type not in SQL_TYPES_OF[python_type]:
            problems.append(
                f"{cls.__name__}.{name} is {python_type.__name__}, the column {sql_type}"
            )
    unread = set(function.columns) - set(fields)
    not_read = set(results.NOT_READ.get(cls, {}))
    if unread != not_read:
        problems.append(
            f"result columns {sorted(unread)} not read by {cls.__name__},"
            f" NOT_READ names {sorted(not_read)}"
        )
    return problems


def test_every_call_matches_its_function(catalog: Catalog) -> None:
    problems = {
        call.name: found for call in ALL_CALLS if (found := _problems_of_call(call, catalog))
    }
    assert problems == {}


def test_each_call_is_listed_once() -> None:
    names = [call.name for call in ALL_CALLS]
    assert len(names) == len(set(names))
    assert all(call.callers for call in ALL_CALLS)  # a call no role may make is no API


def test_every_function_not_wrapped_is_there_with_its_grants(catalog: Catalog) -> None:
    problems = {}
    for entry in NOT_WRAPPED:
        function = catalog.functions.get(catalog.of_not_wrapped(entry))
        if function is None:
            problems[entry.signature] = "no such function"
        elif function.callers != frozenset(entry.callers):
            problems[entry.signature] = f"EXECUTE granted to {sorted(function.callers)}"
        elif not entry.reason:
            problems[entry.signature] = "no reason given"
    assert problems == {}


def test_every_function_of_the_schema_is_in_a_list(catalog: Catalog) -> None:
    """Wrapped (ALL_CALLS), not wrapped with a reason (NOT_WRAPPED), or
    internal: a leading underscore, and no role may execute it."""
    listed = {catalog.of_call(call) for call in ALL_CALLS}
    listed |= {catalog.of_not_wrapped(entry) for entry in NOT_WRAPPED}
    unlisted = {
        signature: sorted(function.callers)
        for signature, function in catalog.functions.items()
        if signature not in listed and not (function.name.startswith("_") and not function.callers)
    }
    assert unlisted == {}


def _changed(call: Call, **changes: Any) -> Call:
    fields = {
        "required": call.required,
        "optional": call.optional,
        "result": call.result,
        "returns": call.returns,
        "callers": call.callers,
        **changes,
    }
    return Call(
        call.name,
        fields["required"],
        fields["optional"],
        fields["result"],
        returns=fields["returns"],
        callers=fields["callers"],
    )


@pytest.mark.parametrize(
    "call",
    [
        _changed(queries.GET_ENTRY, required=(("id", "bigint"),)),
        _changed(
            queries.GET_ENTRY, required=(("entry_id", "bigint"), ("app", "text")), optional=()
        ),
        _changed(queries.GET_ENTRY, required=(("entry_id", "integer"),)),
        _changed(queries.GET_ENTRY, callers=(queries.APP,)),
        _changed(queries.GET_ENTRY, result=results.Entry),
        _changed(queries.BALANCE_AT, returns="numeric"),
        _changed(queries.LIST_OPERATIONS, result=results.App),
    ],
    ids=["renamed", "no default", "retyped", "grant", "result", "scalar", "unread column"],
)
def test_a_drift_is_reported(catalog: Catalog, call: Call) -> None:
    """The check itself: each call differs from its function in one way."""
    assert _problems_of_call(call, catalog) != []
