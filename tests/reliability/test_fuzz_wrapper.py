"""Fuzzing ledger_py: whatever the arguments, a Ledger method returns or
raises a LedgerError of the documented table; never a raw psycopg error or a
UnicodeEncodeError. Text psycopg cannot send (NUL, lone surrogates such as a
JSON "\\ud800" escape decodes to) and ids beyond their SQL type are
InvalidArgument; nothing is written when a call fails.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_py import Ledger
from ledger_py.errors import EXCEPTIONS_BY_SQLSTATE, InvalidArgument, LedgerError
from tests.conftest import drop_database, new_database

from .test_fuzz_sql import bigint_id, integer, json_value, owner, text

OUTCOMES: Counter[str] = Counter()
WRAPPER_FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
unsendable = st.sampled_from(["a\x00b", "\x00", "\ud800", "x\udfff", "é\ud83d"])


@pytest.fixture(scope="module")
def fuzz_ledger(server_url: str, template_url: str) -> Iterator[Ledger]:
    url = new_database(server_url)
    try:
        with Ledger(url, min_size=1, max_size=2) as ledger:
            ledger.post_entry(
                owner_id="rich",
                app="core",
                operation="CREDIT_ADD",
                idempotency_key="seed",
                amount=1000,
            )
            yield ledger
    finally:
        drop_database(server_url, url)


def _written(ledger: Ledger) -> tuple[int, ...]:
    with ledger.pool.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM ledger.entries),"
            " (SELECT count(*) FROM ledger.holds),"
            " (SELECT count(*) FROM ledger.accounts)"
        ).fetchone()
    assert row is not None
    return tuple(row)


def _check(ledger: Ledger, method: str, kwargs: dict[str, Any]) -> LedgerError | None:
    before = _written(ledger)
    try:
        getattr(ledger, method)(**kwargs)
    except LedgerError as exc:
        assert exc.sqlstate in EXCEPTIONS_BY_SQLSTATE, exc
        assert _written(ledger) == before, f"{method} raised {exc!r} but wrote"
        OUTCOMES[f"{method} {type(exc).__name__}"] += 1
        return exc
    OUTCOMES[f"{method} ok"] += 1
    return None


@WRAPPER_FUZZ
@given(
    owner_id=owner,
    idempotency_key=text,
    amount=st.one_of(st.none(), integer),
    metadata=st.one_of(st.none(), json_value),
    operation=st.sampled_from(["CREDIT_ADD", "CREDIT_SPEND"]),
)
def test_post_entry_raises_only_ledger_errors(
    fuzz_ledger: Ledger,
    owner_id: Any,
    idempotency_key: Any,
    amount: Any,
    metadata: Any,
    operation: str,
) -> None:
    _check(
        fuzz_ledger,
        "post_entry",
        {
            "owner_id": owner_id,
            "app": "core",
            "operation": operation,
            "idempotency_key": idempotency_key,
            "amount": amount,
            "metadata": metadata,
        },
    )


@WRAPPER_FUZZ
@given(
    from_owner=owner,
    to_owner=owner,
    amount=integer,
    metadata=st.one_of(st.none(), json_value),
    key=text,
)
def test_transfer_raises_only_ledger_errors(
    fuzz_ledger: Ledger, from_owner: Any, to_owner: Any, amount: Any, metadata: Any, key: Any
) -> None:
    _check(
        fuzz_ledger,
        "transfer",
        {
            "from_owner": from_owner,
            "to_owner": to_owner,
            "amount": amount,
            "app": "core",
            "idempotency_key": key,
            "metadata": metadata,
        },
    )


@WRAPPER_FUZZ
@given(
    entry_id=st.one_of(bigint_id, integer),
    hold_id=st.one_of(bigint_id, integer),
    after_id=st.one_of(st.none(), integer),
    max_rows=st.one_of(st.none(), integer),
    owner_id=owner,
)
def test_reads_and_ids_raise_only_ledger_errors(
    fuzz_ledger: Ledger, entry_id: Any, hold_id: Any, after_id: Any, max_rows: Any, owner_id: Any
) -> None:
    _check(fuzz_ledger, "get_entry", {"entry_id": entry_id})
    _check(fuzz_ledger, "get_hold", {"hold_id": hold_id})
    _check(fuzz_ledger, "capture_hold", {"hold_id": hold_id, "app": "core"})
    _check(fuzz_ledger, "release_hold", {"hold_id": hold_id, "app": "core"})
    _check(
        fuzz_ledger, "reverse_entry", {"entry_id": entry_id, "app": "core", "idempotency_key": "r"}
    )
    _check(
        fuzz_ledger,
        "list_entries",
        {"owner_id": owner_id, "after_id": after_id, "max_rows": max_rows},
    )
    _check(fuzz_ledger, "get_balance", {"owner_id": owner_id})


@WRAPPER_FUZZ
@given(
    items=st.lists(
        st.fixed_dictionaries(
            {
                "owner_id": owner,
                "app": st.just("core"),
                "operation": st.just("CREDIT_ADD"),
                "idempotency_key": text,
                "amount": integer,
                "metadata": json_value,
            }
        ),
        max_size=3,
    )
)
def test_post_entries_raises_only_ledger_errors(
    fuzz_ledger: Ledger, items: list[dict[str, Any]]
) -> None:
    _check(fuzz_ledger, "post_entries", {"entries": items})


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "x\udfff"])
@pytest.mark.parametrize("field", ["owner_id", "idempotency_key", "operation", "app"])
def test_unsendable_text_is_invalid_argument_naming_the_field(
    fuzz_ledger: Ledger, field: str, bad: str
) -> None:
    kwargs = {
        "owner_id": "rich",
        "app": "core",
        "operation": "CREDIT_ADD",
        "idempotency_key": "u",
        field: bad,
    }
    error = _check(fuzz_ledger, "post_entry", kwargs)
    assert isinstance(error, InvalidArgument) and error.detail.get("field") == field, error


@pytest.mark.parametrize(
    "value", [{"k": "\x00"}, {"\x00": 1}, {"k": "\ud800"}, ["not", "an", "object"], 7]
)
def test_unstorable_metadata_is_invalid_argument(fuzz_ledger: Ledger, value: Any) -> None:
    error = _check(
        fuzz_ledger,
        "post_entry",
        {
            "owner_id": "rich",
            "app": "core",
            "operation": "CREDIT_ADD",
            "idempotency_key": f"m-{json.dumps(value)}",
            "metadata": value,
        },
    )
    assert isinstance(error, InvalidArgument), error


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_ids_beyond_bigint_are_invalid_argument(fuzz_ledger: Ledger, value: int) -> None:
    for method, kwargs in [
        ("get_entry", {"entry_id": value}),
        ("get_hold", {"hold_id": value}),
        ("reverse_entry", {"entry_id": value, "app": "core", "idempotency_key": "b"}),
        ("capture_hold", {"hold_id": value, "app": "core"}),
        ("list_entries", {"owner_id": "rich", "after_id": value}),
    ]:
        error = _check(fuzz_ledger, method, kwargs)
        assert isinstance(error, InvalidArgument) and error.detail["field"] in kwargs, (
            method,
            error,
        )


def test_wrapper_fuzzing_summary(fuzz_ledger: Ledger) -> None:
    assert fuzz_ledger.verify() == []
    print("\nwrapper fuzz outcomes", dict(sorted(OUTCOMES.items())))
