"""Every method of Ledger and AsyncLedger against a real PostgreSQL.

Each test runs twice (fixture `ledger`: sync, async). The assertions are on
what the wrapper hands back (types, fields, lists in order); the rules
themselves are tested in tests/sql.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from ledger_py import (
    AlreadyReversed,
    App,
    AsyncLedger,
    Balance,
    Discrepancy,
    Entry,
    Hold,
    HoldNotActive,
    HoldRecord,
    IdempotencyConflict,
    InsufficientCredits,
    JournalEntry,
    Ledger,
    Operation,
    ReportRow,
    Transfer,
    UnknownApp,
)
from ledger_py.queries import ALL_CALLS, Call

Keys = Callable[[], str]


def credit(ledger: Any, owner: str, amount: int, key: str, **extra: Any) -> Entry:
    result: Entry = ledger.post_entry(
        owner_id=owner,
        app="core",
        operation="CREDIT_ADD",
        idempotency_key=key,
        amount=amount,
        **extra,
    )
    return result


def test_post_entry_returns_an_entry_and_replays(ledger: Any) -> None:
    entry = credit(ledger, "alice", 10, "k1", metadata={"order": 7, "note": "é"})
    assert isinstance(entry, Entry)
    assert (entry.owner_id, entry.app, entry.operation, entry.amount, entry.balance) == (
        "alice",
        "core",
        "CREDIT_ADD",
        10,
        10,
    )
    assert entry.replayed is False
    assert isinstance(entry.entry_id, int)
    assert entry.created_at.tzinfo is not None

    again = credit(ledger, "alice", 10, "k1", metadata={"order": 7, "note": "é"})
    assert again.replayed is True
    assert dataclasses.replace(again, replayed=False) == entry

    with pytest.raises(IdempotencyConflict):
        credit(ledger, "alice", 11, "k1", metadata={"order": 7, "note": "é"})


def test_results_are_frozen(ledger: Any) -> None:
    entry = credit(ledger, "alice", 1, "k1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.amount = 2  # type: ignore[misc]


def test_debit_with_default_amount_and_balance(ledger: Any) -> None:
    credit(ledger, "bob", 5, "k1")
    spent = ledger.post_entry(
        owner_id="bob", app="core", operation="CREDIT_SPEND", idempotency_key="k2"
    )
    assert (spent.amount, spent.balance) == (-1, 4)

    balance = ledger.get_balance(owner_id="bob")
    assert balance == Balance("bob", 4, 0, 4, balance.updated_at)
    assert isinstance(balance.updated_at, datetime)

    unknown = ledger.get_balance(owner_id="nobody")
    assert unknown == Balance("nobody", 0, 0, 0, None)


def test_insufficient_credits_carries_the_numbers(ledger: Any) -> None:
    credit(ledger, "carol", 3, "k1")
    with pytest.raises(InsufficientCredits) as caught:
        ledger.post_entry(
            owner_id="carol", app="core", operation="CREDIT_SPEND", idempotency_key="k2", amount=5
        )
    error = caught.value
    assert (error.owner_id, error.needed, error.available) == ("carol", 5, 3)
    assert error.detail == {"owner_id": "carol", "needed": 5, "available": 3}
    assert (error.code, error.sqlstate) == ("insufficient_credits", "LG001")
    assert isinstance(error.__cause__, psycopg.Error)
    assert error.__cause__.sqlstate == "LG001"
    assert ledger.get_balance(owner_id="carol").balance == 3


def test_get_entry_and_list_entries(ledger: Any) -> None:
    entries = [credit(ledger, "dave", 1, f"k{i}", metadata={"i": i}) for i in range(5)]
    journal = ledger.get_entry(entry_id=entries[2].entry_id)
    assert isinstance(journal, JournalEntry)
    assert journal.metadata == {"i": 2}
    assert journal.idempotency_key == "k2"
    assert (journal.transfer_id, journal.hold_id, journal.reverses_entry_id) == (None, None, None)

    newest_first = ledger.list_entries(owner_id="dave")
    assert [e.entry_id for e in newest_first] == [e.entry_id for e in reversed(entries)]
    page = ledger.list_entries(owner_id="dave", after_id=entries[3].entry_id, max_rows=2)
    assert [e.entry_id for e in page] == [entries[2].entry_id, entries[1].entry_id]
    assert ledger.list_entries(owner_id="nobody") == []


def test_balance_at(ledger: Any) -> None:
    first = credit(ledger, "erin", 4, "k1")
    second = credit(ledger, "erin", 6, "k2")
    assert ledger.balance_at(owner_id="erin", at=first.created_at - timedelta(seconds=1)) == 0
    assert ledger.balance_at(owner_id="erin", at=first.created_at) == 4
    assert ledger.balance_at(owner_id="erin", at=second.created_at) == 10
    assert ledger.balance_at(owner_id="erin", at=datetime.now(timezone.utc)) == 10


def test_hold_capture_and_release(ledger: Any) -> None:
    credit(ledger, "fay", 10, "k1")
    hold = ledger.create_hold(
        owner_id="fay",
        app="example_app",
        operation="CONTENT_CREATION",
        idempotency_key="h1",
        ttl=timedelta(minutes=5),
    )
    assert isinstance(hold, Hold)
    assert (hold.amount, hold.status, hold.replayed) == (5, "active", False)
    assert ledger.get_balance(owner_id="fay") == Balance(
        "fay", 10, 5, 5, ledger.get_balance(owner_id="fay").updated_at
    )

    record = ledger.get_hold(hold_id=hold.hold_id)
    assert isinstance(record, HoldRecord)
    assert record.expires_at - record.created_at == timedelta(minutes=5)

    captured = ledger.capture_hold(hold_id=hold.hold_id, app="example_app", amount=3)
    assert (captured.amount, captured.balance, captured.operation) == (-3, 7, "CONTENT_CREATION")
    assert ledger.capture_hold(hold_id=hold.hold_id, app="example_app", amount=3).replayed is True
    with pytest.raises(HoldNotActive):
        ledger.release_hold(hold_id=hold.hold_id, app="example_app")

    # ttl omitted: the SQL default (15 minutes) applies.
    second = ledger.create_hold(
        owner_id="fay", app="core", operation="CREDIT_SPEND", idempotency_key="h2"
    )
    assert (
        timedelta(minutes=14)
        < second.expires_at - datetime.now(timezone.utc)
        <= timedelta(minutes=15)
    )
    released = ledger.release_hold(hold_id=second.hold_id, app="core")
    assert (released.status, released.replayed) == ("released", False)
    assert ledger.release_hold(hold_id=second.hold_id, app="core").replayed is True

    holds = ledger.list_holds(owner_id="fay")
    assert [(h.hold_id, h.status) for h in holds] == [
        (second.hold_id, "released"),
        (hold.hold_id, "captured"),
    ]
    assert holds[1].captured_amount == 3
    assert holds[1].entry_id == captured.entry_id


def test_transfer_and_reverse_entry(ledger: Any) -> None:
    credit(ledger, "gil", 10, "k1")
    moved = ledger.transfer(
        from_owner="gil",
        to_owner="hal",
        amount=4,
        app="core",
        idempotency_key="t1",
        metadata={"why": "gift"},
    )
    assert isinstance(moved, Transfer)
    assert (moved.amount, moved.from_balance, moved.to_balance, moved.replayed) == (4, 6, 4, False)
    assert ledger.get_entry(entry_id=moved.to_entry_id).metadata == {"why": "gift"}

    reversals = ledger.reverse_entry(
        entry_id=moved.from_entry_id, app="core", idempotency_key="r1", reason="oops"
    )
    assert [type(r) for r in reversals] == [Entry, Entry]
    assert [(r.owner_id, r.amount, r.operation) for r in reversals] == [
        ("gil", 4, "REVERSAL"),
        ("hal", -4, "REVERSAL"),
    ]
    replayed = ledger.reverse_entry(
        entry_id=moved.from_entry_id, app="core", idempotency_key="r1", reason="oops"
    )
    assert [r.replayed for r in replayed] == [True, True]
    with pytest.raises(AlreadyReversed):
        ledger.reverse_entry(entry_id=moved.to_entry_id, app="core", idempotency_key="r2")
    assert ledger.get_balance(owner_id="gil").balance == 10


def test_apps_operations_report_and_verify(ledger: Any) -> None:
    app = ledger.define_app(app="shop", description="A shop")
    assert isinstance(app, App)
    assert (app.app, app.description) == ("shop", "A shop")
    assert ledger.define_app(app="shop").description == "A shop"  # None keeps it

    operation = ledger.define_operation(
        app="shop",
        operation="SHOP_BUY",
        direction="debit",
        default_amount=2,
        max_amount=50,
        caller_sets_amount=True,
        description="Buying",
    )
    assert isinstance(operation, Operation)
    assert (operation.min_amount, operation.max_amount, operation.limit_per) == (1, 50, None)
    names = [o.operation for o in ledger.list_operations(app="shop")]
    assert "SHOP_BUY" in names and "CONTENT_ACCESS" not in names

    before = datetime.now(timezone.utc)
    credit(ledger, "ivy", 10, "k1")
    ledger.post_entry(
        owner_id="ivy", app="shop", operation="SHOP_BUY", idempotency_key="b1", amount=7
    )
    ledger.post_entry(owner_id="jon", app="core", operation="SIGNUP_CREDIT", idempotency_key="s1")
    report = ledger.app_report(app="shop", from_time=before, to_time=datetime.now(timezone.utc))
    assert report == [ReportRow("shop", "SHOP_BUY", 1, 0, 7, 1, 0, 0)]
    core = ledger.app_report(app="core", from_time=before, to_time=datetime.now(timezone.utc))
    assert [(r.operation, r.entries, r.credited) for r in core] == [
        ("CREDIT_ADD", 1, 10),
        ("SIGNUP_CREDIT", 1, 3),
    ]

    assert ledger.verify() == []


def test_verify_reports_discrepancies(ledger: Any, conn: psycopg.Connection[Any]) -> None:
    credit(ledger, "kim", 5, "k1")
    # A superuser bypasses every function: make the stored balance lie.
    conn.execute("UPDATE ledger.accounts SET balance = 4 WHERE owner_id = 'kim'")
    findings = ledger.verify()
    assert findings and all(isinstance(f, Discrepancy) for f in findings)
    assert {f.check_name for f in findings} == {
        "balance_matches_entries",
        "last_entry_balance",
        "balance_matches_grants",
    }
    assert {f.owner_id for f in findings} == {"kim"}


def test_post_entries_in_input_order(ledger: Any) -> None:
    credit(ledger, "lea", 10, "k0")
    batch = [
        {
            "owner_id": "lea",
            "app": "core",
            "operation": "CREDIT_SPEND",
            "idempotency_key": "b1",
            "amount": 2,
        },
        {
            "owner_id": "max",
            "app": "core",
            "operation": "CREDIT_ADD",
            "idempotency_key": "b2",
            "amount": 5,
            "metadata": {"n": 1},
        },
        {"owner_id": "lea", "app": "core", "operation": "CREDIT_ADD", "idempotency_key": "b3"},
    ]
    results = ledger.post_entries(entries=batch)
    assert [(r.owner_id, r.amount, r.balance) for r in results] == [
        ("lea", -2, 8),
        ("max", 5, 5),
        ("lea", 10, 18),
    ]
    assert all(isinstance(r, Entry) and not r.replayed for r in results)
    with pytest.raises(InsufficientCredits):
        ledger.post_entries(
            entries=[
                {
                    "owner_id": "max",
                    "app": "core",
                    "operation": "CREDIT_ADD",
                    "idempotency_key": "c1",
                    "amount": 1,
                },
                {
                    "owner_id": "max",
                    "app": "core",
                    "operation": "CREDIT_SPEND",
                    "idempotency_key": "c2",
                    "amount": 100,
                },
            ]
        )
    assert ledger.get_balance(owner_id="max").balance == 5  # all or nothing


def test_huge_amount_reaches_the_database(ledger: Any) -> None:
    from ledger_py import InvalidAmount

    with pytest.raises(InvalidAmount) as caught:
        credit(ledger, "ned", 10**30, "k1")
    assert caught.value.detail["reason"] == "not a positive integer"


@pytest.mark.parametrize("call", ALL_CALLS, ids=lambda call: call.name)
def test_both_classes_offer_a_method_per_call(call: Call) -> None:
    """One method per function of the API list, in both classes, with the
    call's parameters (the optional ones default to None, sent only when
    given) and conn, all keyword-only."""
    expected = [(name, inspect.Parameter.empty) for name, _ in call.required]
    expected += [(name, None) for name, _ in call.optional]
    expected.append(("conn", None))
    for cls in (Ledger, AsyncLedger):
        parameters = list(inspect.signature(getattr(cls, call.name)).parameters.values())[1:]
        assert [(p.name, p.default) for p in parameters] == expected, cls
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), cls
    assert inspect.iscoroutinefunction(getattr(AsyncLedger, call.name))


def test_a_service_role_can_call_the_api(kind: str, db_url: str) -> None:
    """Services log in as members of ledger_app: the wrapper's statements
    need nothing beyond that role's grants."""
    from urllib.parse import quote

    from .conftest import make_ledger

    instance = make_ledger(kind, db_url + "?options=" + quote("-c role=ledger_app"))
    try:
        entry = credit(instance, "uma", 3, "k1")
        assert instance.get_balance(owner_id="uma").balance == 3
        assert instance.get_entry(entry_id=entry.entry_id).created_by == "ledger_app"
        assert [e.entry_id for e in instance.list_entries(owner_id="uma")] == [entry.entry_id]
        hold = instance.create_hold(
            owner_id="uma", app="core", operation="CREDIT_SPEND", idempotency_key="h"
        )
        assert instance.list_holds(owner_id="uma")[0].hold_id == hold.hold_id
        assert instance.verify() == []
        # Defining apps is ledger_owner's: a privilege error is not a ledger error.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            instance.define_app(app="rogue")
    finally:
        instance.close()


def test_reads_with_app_hide_other_apps_metadata_and_keys(ledger: Any) -> None:
    """Balances and history are shared; metadata and keys are the writer's."""
    ledger.define_app(app="alpha")
    ledger.define_app(app="beta")
    mine = ledger.post_entry(
        owner_id="gil",
        app="alpha",
        operation="CREDIT_ADD",
        idempotency_key="alpha-key",
        amount=9,
        metadata={"secret": 1},
    )
    hold = ledger.create_hold(
        owner_id="gil",
        app="alpha",
        operation="CREDIT_SPEND",
        idempotency_key="alpha-hold",
        amount=2,
    )

    other = ledger.get_entry(entry_id=mine.entry_id, app="beta")
    assert (other.amount, other.balance, other.app) == (9, 9, "alpha")
    assert (other.metadata, other.idempotency_key) == (None, None)
    [listed] = ledger.list_entries(owner_id="gil", app="beta")
    assert (listed.entry_id, listed.metadata, listed.idempotency_key) == (mine.entry_id, None, None)
    assert ledger.get_hold(hold_id=hold.hold_id, app="beta").idempotency_key is None
    assert [h.idempotency_key for h in ledger.list_holds(owner_id="gil", app="beta")] == [None]

    for app in ("alpha", None):
        own = ledger.get_entry(entry_id=mine.entry_id, app=app)
        assert (own.metadata, own.idempotency_key) == ({"secret": 1}, "alpha-key")
        assert ledger.list_entries(owner_id="gil", app=app)[0].metadata == {"secret": 1}
        assert ledger.get_hold(hold_id=hold.hold_id, app=app).idempotency_key == "alpha-hold"
        assert ledger.list_holds(owner_id="gil", app=app)[0].idempotency_key == "alpha-hold"
    with pytest.raises(UnknownApp):
        ledger.get_entry(entry_id=mine.entry_id, app="no_such_app")
