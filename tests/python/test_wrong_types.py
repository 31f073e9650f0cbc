"""Wrong Python types are InvalidArgument before any round trip, never a raw
PostgreSQL error and never another row.

Each parameter's Python type is checked against its SQL type (ids and
amounts: int but not bool; timestamps: datetime; ttl: timedelta; text: str).
Values of the right type stay the database's to judge. What still reaches a
parameter cast and fails there (22xxx, 42846) is translated at the error
boundary as a backstop.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from ledger_py import InvalidAmount, InvalidArgument, Ledger, translate_errors

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BAD_INSTANTS = ["allballs", "", "2020-02-30", "294277-01-01", "x Mars/Olympus", 0, 1.5]


def assert_refused(error: InvalidArgument, field: str) -> None:
    assert error.code == "invalid_argument" and error.sqlstate == "LG007"
    assert error.detail["field"] == field, error.detail
    assert error.detail["reason"] == "wrong type", error.detail
    assert not isinstance(error.__cause__, psycopg.Error)  # raised by the wrapper: nothing sent


@pytest.fixture
def funded(ledger: Any) -> Any:
    for n in (1, 2):
        ledger.post_entry(
            owner_id=f"o{n}", app="core", operation="CREDIT_ADD", idempotency_key=f"f{n}", amount=9
        )
    return ledger


def test_a_bool_amount_is_refused(funded: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        funded.post_entry(
            owner_id="o1", app="core", operation="CREDIT_ADD", idempotency_key="b", amount=True
        )
    assert_refused(caught.value, "amount")
    assert funded.get_balance(owner_id="o1").balance == 9


def test_an_int_ttl_is_refused(funded: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        funded.create_hold(
            owner_id="o1", app="core", operation="CREDIT_SPEND", idempotency_key="h", ttl=5
        )
    assert_refused(caught.value, "ttl")
    assert funded.list_holds(owner_id="o1") == []


@pytest.mark.parametrize("at", BAD_INSTANTS, ids=repr)
def test_an_instant_that_is_not_a_datetime_is_refused(funded: Any, at: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        funded.balance_at(owner_id="o1", at=at)
    assert_refused(caught.value, "at")
    with pytest.raises(InvalidArgument) as caught:
        funded.app_report(app="core", from_time=at, to_time=NOW)
    assert_refused(caught.value, "from_time")
    with pytest.raises(InvalidArgument) as caught:
        funded.app_report(app="core", from_time=NOW, to_time=at)
    assert_refused(caught.value, "to_time")


def test_a_float_id_is_refused_instead_of_rounded_to_another_row(funded: Any) -> None:
    entry_2 = funded.get_entry(entry_id=2)
    assert entry_2.owner_id == "o2"
    for bad in (1.5, True, "2", Decimal(2)):
        with pytest.raises(InvalidArgument) as caught:
            funded.get_entry(entry_id=bad)
        assert_refused(caught.value, "entry_id")

    holds = [
        funded.create_hold(
            owner_id="o1", app="core", operation="CREDIT_SPEND", idempotency_key=f"h{n}", amount=1
        )
        for n in (1, 2)
    ]
    assert [h.hold_id for h in holds] == [1, 2]
    with pytest.raises(InvalidArgument) as caught:
        funded.capture_hold(hold_id=1.5, app="core")
    assert_refused(caught.value, "hold_id")
    with pytest.raises(InvalidArgument):
        funded.release_hold(hold_id=1.5, app="core")
    assert {h.status for h in funded.list_holds(owner_id="o1")} == {"active"}


def _entry(**changes: Any) -> dict[str, Any]:
    return {
        "owner_id": "o1",
        "app": "core",
        "operation": "CREDIT_ADD",
        "idempotency_key": "m",
        "amount": 1,
        **changes,
    }


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("get_balance", {"owner_id": 5}, "owner_id"),
        ("post_entry", _entry(idempotency_key=7), "idempotency_key"),
        ("post_entry", _entry(metadata={"tags": {1, 2}}), "metadata"),
    ],
    ids=["int owner_id", "int idempotency_key", "metadata with a set"],
)
def test_text_and_metadata_of_the_wrong_type_are_refused(
    funded: Any, method: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        getattr(funded, method)(**params)
    assert_refused(caught.value, field)
    assert funded.get_balance(owner_id="o1").balance == 9


def test_right_types_still_reach_the_database_which_judges_the_values(funded: Any) -> None:
    """A fractional Decimal is the database's to refuse (LG006), a timestamp
    the database's to read: the type check adds no rule of its own."""
    with pytest.raises(InvalidAmount):
        funded.post_entry(
            owner_id="o1",
            app="core",
            operation="CREDIT_ADD",
            idempotency_key="d",
            amount=Decimal("1.5"),
        )
    assert funded.balance_at(owner_id="o1", at=datetime.now(UTC) + timedelta(days=1)) == 9
    assert funded.get_entry(entry_id=1).owner_id == "o1"


def test_no_round_trip_is_made_for_a_wrong_type() -> None:
    """The check happens before a connection is taken: this Ledger's database
    does not exist, and the error is still InvalidArgument."""
    ledger = Ledger("postgresql://nobody@127.0.0.1:1/none", timeout=0.5)
    try:
        with pytest.raises(InvalidArgument):
            ledger.get_entry(entry_id=1.5)
        assert ledger.pool.closed  # not even opened: no connection was tried
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("value", "sqlstate"),
    [("allballs", "22007"), ("2020-02-30", "22008"), ("294277-01-01", "22008")],
)
def test_the_boundary_translates_a_refused_parameter_cast(
    conn: psycopg.Connection[Any], value: str, sqlstate: str
) -> None:
    """The backstop: a value that reaches a parameter cast and fails there is
    InvalidArgument naming the parameter, not a raw DataError."""
    params = {"owner_id": "o1", "at": value}
    with pytest.raises(InvalidArgument) as caught, translate_errors(None, params):
        conn.execute(
            "SELECT ledger.balance_at(owner_id => %(owner_id)s::text, at => %(at)s::timestamptz)",
            params,
        )
    assert caught.value.detail["field"] == "at"
    assert isinstance(caught.value.__cause__, psycopg.errors.DataError)
    assert caught.value.__cause__.sqlstate == sqlstate
