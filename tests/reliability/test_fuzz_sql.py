"""Fuzzing the SQL API with hypothesis: arbitrary text (NUL, lone surrogates,
every plane of Unicode, over-long), integers (zero, negative, bigint edges and
far beyond), numerics (fractions, NaN, +-Infinity), intervals, and metadata
(arbitrary JSON, \\u0000 escapes, lone surrogate escapes, numbers beyond
numeric, deep nesting, non-objects, non-JSON text).

Property, for every function of the API: a call either succeeds or fails
with one of the project's documented SQLSTATEs (LG001-LG013), and a failed
call writes nothing (entries, accounts, holds unchanged). Values psycopg
refuses to send (text containing NUL, strings that are not encodable as
UTF-8) never reach the server; that they are refused before sending is
asserted too (the wrapper's translation of them is tested in
test_fuzz_wrapper.py).

Calls are rendered as the wrapper renders them (named parameters, each cast
to the parameter's SQL type) and run as ledger_app, the role services use;
define_app/define_operation as ledger_owner. Ids (SQL bigint) are drawn
within bigint: a larger value fails at the caller's own cast, before any
ledger function runs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import drop_database, new_database

DOCUMENTED = {f"LG{n:03d}" for n in range(1, 14)}
BIGINT = 2**63 - 1
EXAMPLES = 150
OUTCOMES: Counter[str] = Counter()

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---- strategies -------------------------------------------------------------------------------

# Every code point, surrogates included (psycopg cannot encode those), NUL favoured.
any_char = st.characters(codec=None, categories=None)
text = st.one_of(
    st.none(),
    st.text(any_char, max_size=40),
    st.text(st.sampled_from("\x00'\";\\%_$\n\t \u200b\ufeff\U0010ffff\ud800é"), max_size=12),
    st.text(st.characters(codec="utf-8"), min_size=250, max_size=260),
    st.sampled_from(
        [
            "",
            " ",
            "core",
            "example_app",
            "CREDIT_ADD",
            "CREDIT_SPEND",
            "TRANSFER_OUT",
            "REVERSAL",
            "CONTENT_ACCESS",
            "fuzz-rich",
            "fuzz-poor",
            "a\x00b",
            "Robert'); DROP TABLE ledger.entries;--",
        ]
    ),
)
owner = st.one_of(st.sampled_from(["fuzz-rich", "fuzz-poor"]), text)
app = st.one_of(st.sampled_from(["core", "example_app", "other_app"]), text)
operation = st.one_of(
    st.sampled_from(
        [
            "CREDIT_ADD",
            "CREDIT_SPEND",
            "SIGNUP_CREDIT",
            "DAILY_REWARD",
            "TRANSFER_IN",
            "REVERSAL",
            "CONTENT_ACCESS",
        ]
    ),
    text,
)
edges = st.sampled_from(
    [
        0,
        1,
        -1,
        2**31 - 1,
        2**31,
        BIGINT,
        BIGINT + 1,
        -BIGINT - 1,
        -BIGINT - 2,
        2**64,
        10**40,
        -(10**40),
    ]
)
integer = st.one_of(edges, st.integers(), st.integers(min_value=-(2**80), max_value=2**80))
numeric = st.one_of(
    st.none(),
    integer,
    # -NaN and sNaN are not SQL numerics: psycopg sends them as text PostgreSQL rejects
    # (22P02) before any function runs.
    st.decimals(allow_nan=True, allow_infinity=True, places=None).filter(
        lambda d: not (d.is_nan() and (d.is_signed() or d.is_snan()))
    ),
    st.sampled_from(
        [
            Decimal("NaN"),
            Decimal("Infinity"),
            Decimal("-Infinity"),
            Decimal("1.5"),
            Decimal("1E+30"),
            Decimal("0.0000001"),
            Decimal("9223372036854775807.5"),
        ]
    ),
)
bigint_id = st.one_of(
    st.none(),
    st.sampled_from([1, 2, 3, 0, -1, BIGINT, -BIGINT - 1]),
    st.integers(min_value=-BIGINT - 1, max_value=BIGINT),
)
json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(any_char, max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(any_char, max_size=6), inner, max_size=4),
    ),
    max_leaves=12,
)
metadata = st.one_of(
    st.none(),
    json_value.map(json.dumps),  # \u0000 and lone surrogates arrive as JSON escapes
    st.dictionaries(st.text(max_size=6), json_value, max_size=4).map(json.dumps),
    st.text(any_char, max_size=30),  # not JSON at all
    st.sampled_from(
        [
            '{"a": "\\u0000"}',
            '{"\\u0000": 1}',
            '{"a": "\\ud800"}',
            '{"n": 1e1000000}',
            "[" * 5000 + "]" * 5000,
            '{"a":' * 2000 + "1" + "}" * 2000,
            "null",
            "[]",
            '"text"',
            "1",
            "{}",
            '{"a": 1, "a": 2}',
            "{" + '"k": "v",' * 10 + '"z": 0}',
            '{"big": "' + "x" * 70000 + '"}',
        ]
    ),
)
interval = st.one_of(
    st.none(),
    st.timedeltas(min_value=timedelta(days=-(10**6)), max_value=timedelta(days=10**6)),
    st.sampled_from(
        [
            timedelta(0),
            timedelta(seconds=1),
            timedelta(days=7),
            timedelta(days=7, microseconds=1),
            timedelta(microseconds=999999),
        ]
    ),
)
timestamp = st.one_of(
    st.none(), st.datetimes(timezones=st.just(__import__("datetime").timezone.utc))
)
batch_item = st.fixed_dictionaries(
    {},
    optional={
        "owner_id": owner,
        "app": app,
        "operation": operation,
        "idempotency_key": text,
        "amount": st.one_of(integer, st.floats(), st.text(max_size=5), st.booleans()),
        "metadata": st.one_of(json_value, st.dictionaries(st.text(max_size=4), json_value)),
        "surprise": json_value,
    },
)
good_batch = st.lists(
    st.fixed_dictionaries(
        {
            "owner_id": st.sampled_from(["fuzz-rich", "fuzz-poor", "fuzz-full", "fuzz-new"]),
            "app": st.just("core"),
            "operation": st.sampled_from(["CREDIT_ADD", "CREDIT_SPEND"]),
            "idempotency_key": st.uuids().map(str),
            "amount": st.integers(1, 100),
        }
    ),
    min_size=1,
    max_size=4,
).map(json.dumps)
batch = st.one_of(
    st.lists(batch_item, max_size=5).map(json.dumps),
    json_value.map(json.dumps),
    metadata,
    st.lists(
        st.fixed_dictionaries(
            {
                "owner_id": owner,
                "app": st.just("core"),
                "operation": st.sampled_from(["CREDIT_ADD", "CREDIT_SPEND"]),
                "idempotency_key": text,
                "amount": integer,
            }
        ),
        min_size=1,
        max_size=4,
    ).map(json.dumps),
)

# Plausible values: a call built from these alone mostly succeeds, so that a
# fuzzed field is judged by the check it reaches, and successful writes
# (and overflows) happen between the failures.
good_owner = st.sampled_from(["fuzz-rich", "fuzz-poor", "fuzz-full", "fuzz-new"])
fresh_key = st.uuids().map(str)
good_amount = st.one_of(st.integers(1, 100), st.sampled_from([None, 1_000_000]))
good_meta = st.one_of(
    st.just("{}"), st.dictionaries(st.text(max_size=5), json_value, max_size=3).map(json.dumps)
)
good_id = st.sampled_from([1, 2, 3, 4, 5])

# name -> (SQL parameter types, {parameter: (plausible strategy, fuzz strategy)})
Spec = tuple[dict[str, str], dict[str, tuple[Any, Any]]]
CALLS: dict[str, Spec] = {
    "post_entry": (
        {
            "owner_id": "text",
            "app": "text",
            "operation": "text",
            "idempotency_key": "text",
            "amount": "numeric",
            "metadata": "text",
        },
        {
            "owner_id": (good_owner, owner),
            "app": (st.just("core"), app),
            "operation": (st.sampled_from(["CREDIT_ADD", "CREDIT_SPEND"]), operation),
            "idempotency_key": (fresh_key, text),
            "amount": (good_amount, numeric),
            "metadata": (good_meta, metadata),
        },
    ),
    "create_hold": (
        {
            "owner_id": "text",
            "app": "text",
            "operation": "text",
            "idempotency_key": "text",
            "amount": "numeric",
            "ttl": "interval",
        },
        {
            "owner_id": (good_owner, owner),
            "app": (st.just("core"), app),
            "operation": (st.just("CREDIT_SPEND"), operation),
            "idempotency_key": (fresh_key, text),
            "amount": (good_amount, numeric),
            "ttl": (st.just(timedelta(hours=1)), interval),
        },
    ),
    "capture_hold": (
        {"hold_id": "bigint", "app": "text", "amount": "numeric"},
        {
            "hold_id": (good_id, bigint_id),
            "app": (st.just("core"), app),
            "amount": (st.sampled_from([None, 1]), numeric),
        },
    ),
    "release_hold": (
        {"hold_id": "bigint", "app": "text"},
        {"hold_id": (good_id, bigint_id), "app": (st.just("core"), app)},
    ),
    "transfer": (
        {
            "from_owner": "text",
            "to_owner": "text",
            "amount": "numeric",
            "app": "text",
            "idempotency_key": "text",
            "metadata": "text",
        },
        {
            "from_owner": (good_owner, owner),
            "to_owner": (good_owner, owner),
            "amount": (good_amount, numeric),
            "app": (st.just("core"), app),
            "idempotency_key": (fresh_key, text),
            "metadata": (good_meta, metadata),
        },
    ),
    "reverse_entry": (
        {"entry_id": "bigint", "app": "text", "idempotency_key": "text", "reason": "text"},
        {
            "entry_id": (st.integers(1, 40), bigint_id),
            "app": (st.just("core"), app),
            "idempotency_key": (fresh_key, text),
            "reason": (st.none(), text),
        },
    ),
    "post_entries": ({"entries": "text"}, {"entries": (good_batch, batch)}),
    "get_balance": ({"owner_id": "text"}, {"owner_id": (good_owner, owner)}),
    "get_entry": ({"entry_id": "bigint"}, {"entry_id": (good_id, bigint_id)}),
    "list_entries": (
        {"owner_id": "text", "after_id": "bigint", "max_rows": "integer"},
        {
            "owner_id": (good_owner, owner),
            "after_id": (st.none(), bigint_id),
            "max_rows": (st.none(), st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))),
        },
    ),
    "balance_at": (
        {"owner_id": "text", "at": "timestamptz"},
        {"owner_id": (good_owner, owner), "at": (timestamp, timestamp)},
    ),
    "get_hold": ({"hold_id": "bigint"}, {"hold_id": (good_id, bigint_id)}),
    "list_holds": ({"owner_id": "text"}, {"owner_id": (good_owner, owner)}),
    "list_operations": ({"app": "text"}, {"app": (st.just("core"), app)}),
    "app_report": (
        {"app": "text", "from_time": "timestamptz", "to_time": "timestamptz"},
        {
            "app": (st.just("core"), app),
            "from_time": (timestamp, timestamp),
            "to_time": (timestamp, timestamp),
        },
    ),
}
OWNER_CALLS: dict[str, Spec] = {
    "define_app": (
        {"app": "text", "description": "text"},
        {"app": (st.sampled_from(["fuzz_app", "core"]), app), "description": (st.none(), text)},
    ),
    "define_operation": (
        {
            "app": "text",
            "operation": "text",
            "direction": "text",
            "default_amount": "bigint",
            "min_amount": "bigint",
            "max_amount": "bigint",
            "caller_sets_amount": "boolean",
            "limit_per": "text",
            "description": "text",
        },
        {
            "app": (st.just("other_app"), app),
            "operation": (st.just("FUZZ_OP"), operation),
            "direction": (st.sampled_from(["credit", "debit"]), text),
            "default_amount": (st.just(5), bigint_id),
            "min_amount": (st.just(1), bigint_id),
            "max_amount": (st.just(10), bigint_id),
            "caller_sets_amount": (st.booleans(), st.none()),
            "limit_per": (st.none(), st.one_of(st.sampled_from(["ever", "day"]), text)),
            "description": (st.none(), text),
        },
    ),
}


def arguments(spec: dict[str, tuple[Any, Any]]) -> Any:
    """One or two fuzzed parameters among plausible ones, or every parameter fuzzed."""
    names = sorted(spec)

    def some_fuzzed(chosen: list[str]) -> Any:
        return st.fixed_dictionaries({n: spec[n][1] if n in chosen else spec[n][0] for n in names})

    return st.one_of(
        st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True).flatmap(some_fuzzed),
        some_fuzzed([]),
        some_fuzzed(names),
    )


# ---- the database -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_conn(server_url: str, template_url: str) -> Iterator[psycopg.Connection[Any]]:
    """One database for the module (hypothesis runs many examples per test)."""
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT ledger.define_app('other_app')")
            conn.execute(
                "SELECT ledger.post_entry('fuzz-rich', 'core', 'CREDIT_ADD', 'seed-1', 1000000)"
            )
            conn.execute("SELECT ledger.post_entry('fuzz-poor', 'core', 'CREDIT_ADD', 'seed-2', 3)")
            conn.execute(
                "SELECT ledger.create_hold('fuzz-rich', 'core', 'CREDIT_SPEND', 'seed-3', 10)"
            )
            conn.execute("SELECT ledger.transfer('fuzz-rich', 'fuzz-poor', 5, 'core', 'seed-4')")
            # A balance a few credits short of the largest bigint: credits to it overflow.
            conn.execute(
                "SELECT ledger.define_operation('other_app', 'MINT', 'credit', 1, 1,"
                " 9223372036854775807, true)"
            )
            conn.execute(
                "SELECT ledger.post_entry('fuzz-full', 'other_app', 'MINT', 'seed-5',"
                " 9223372036854775000)"
            )
            yield conn
    finally:
        drop_database(server_url, url)


def _counts(conn: psycopg.Connection[Any]) -> tuple[int, ...]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM ledger.entries), (SELECT count(*) FROM ledger.accounts),"
        " (SELECT count(*) FROM ledger.holds),"
        " (SELECT count(*) FROM ledger.holds WHERE status <> 'active'),"
        " (SELECT count(*) FROM ledger.apps), (SELECT count(*) FROM ledger.operations),"
        " (SELECT coalesce(sum(balance), 0) FROM ledger.accounts)"
    ).fetchone()
    assert row is not None
    return tuple(row)


def _sql(name: str, types: dict[str, str], params: dict[str, Any]) -> str:
    args = ", ".join(f"{p} => %({p})s::{types[p]}" for p in params)
    return f"SELECT * FROM ledger.{name}({args})"


def _unsendable(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_call(
    conn: psycopg.Connection[Any],
    role: str,
    name: str,
    types: dict[str, str],
    params: dict[str, Any],
) -> None:
    """The property: success, or a documented SQLSTATE and nothing written."""
    before = _counts(conn)
    query = _sql(name, types, params)
    conn.execute(f"SET ROLE {role}")
    try:
        conn.execute(query, params).fetchall()
    except psycopg.Error as exc:
        if exc.sqlstate is None:
            # Refused by psycopg before sending: only for values PostgreSQL text cannot hold.
            assert isinstance(exc, psycopg.DataError) and any(map(_unsendable, params.values())), (
                exc
            )
            OUTCOMES[f"{name} client-refused"] += 1
        else:
            assert exc.sqlstate in DOCUMENTED, f"{name}: {exc.sqlstate} {exc}\n{params!r}"[:2000]
            OUTCOMES[f"{name} {exc.sqlstate}"] += 1
        conn.execute("RESET ROLE")
        assert _counts(conn) == before, f"{name} failed with {exc.sqlstate} but wrote"
        return
    except UnicodeEncodeError:
        assert any(map(_unsendable, params.values()))
        OUTCOMES[f"{name} client-refused"] += 1
        conn.execute("RESET ROLE")
        assert _counts(conn) == before
        return
    conn.execute("RESET ROLE")
    OUTCOMES[f"{name} ok"] += 1


def _fuzz_test(name: str, role: str, spec: tuple[dict[str, str], dict[str, Any]]) -> Any:
    types, strategies = spec

    @FUZZ
    @given(params=arguments(strategies))
    def run(fuzz_conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
        check_call(fuzz_conn, role, name, types, params)

    return run


for _name, _spec in CALLS.items():
    globals()[f"test_fuzz_{_name}"] = _fuzz_test(_name, "ledger_app", _spec)
for _name, _spec in OWNER_CALLS.items():
    globals()[f"test_fuzz_{_name}"] = _fuzz_test(_name, "ledger_owner", _spec)


def test_fuzzing_left_the_ledger_consistent(fuzz_conn: psycopg.Connection[Any]) -> None:
    from .invariants import ledger_problems

    assert ledger_problems(fuzz_conn) == []
    print("\nfuzz outcomes", dict(sorted(OUTCOMES.items())))
