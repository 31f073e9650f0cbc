"""Credit grants through Ledger and AsyncLedger against a real PostgreSQL.

Each test runs twice (fixture `ledger`: sync, async). What is asserted is
what the wrapper hands back (types, fields, orders, the exceptions); the
rules themselves (spending order, expiry, voids) are the SQL's and tested in
tests/sql. A grant that must expire is given an expiry a second ahead, and
the test waits for that second to pass.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ledger_py import (
    Entry,
    Grant,
    GrantNotActive,
    InvalidArgument,
    Ledger,
    NotFound,
    Operation,
    OperationNotAllowed,
    Spending,
)

SOON = timedelta(seconds=1)


def now() -> datetime:
    return datetime.now(timezone.utc)


def wait_until_past(instant: datetime) -> None:
    """Sleep until `instant` has passed (at most a second or so here)."""
    time.sleep(max(0.0, (instant - now()).total_seconds()) + 0.05)


def grant(ledger: Any, owner: str, key: str, operation: str = "CREDIT_ADD", **extra: Any) -> Entry:
    result: Entry = ledger.grant_credits(
        owner_id=owner, app="core", operation=operation, idempotency_key=key, **extra
    )
    return result


def spend(ledger: Any, owner: str, amount: int, key: str) -> Entry:
    result: Entry = ledger.post_entry(
        owner_id=owner, app="core", operation="CREDIT_SPEND", idempotency_key=key, amount=amount
    )
    return result


def grant_of(ledger: Any, owner: str, entry: Entry) -> Grant:
    [found] = [
        g
        for g in ledger.list_grants(owner_id=owner, include_closed=True)
        if g.entry_id == entry.entry_id
    ]
    return found


def test_operations_carry_expiry_and_priority(ledger: Any) -> None:
    ledger.define_app(app="club")
    defined = ledger.define_operation(
        app="club",
        operation="CLUB_BONUS",
        direction="credit",
        default_amount=5,
        expires_after=timedelta(days=7),
        grant_priority=5,
    )
    assert isinstance(defined, Operation)
    assert (defined.expires_after, defined.grant_priority) == (timedelta(days=7), 5)
    [listed] = [o for o in ledger.list_operations(app="club") if o.operation == "CLUB_BONUS"]
    assert listed == defined

    core = {o.operation: o for o in ledger.list_operations(app="core")}
    promo = core["PROMO_CREDIT"]
    assert (promo.direction, promo.expires_after, promo.grant_priority) == (
        "credit",
        timedelta(days=30),
        10,
    )
    assert (promo.min_amount, promo.max_amount, promo.caller_sets_amount) == (1, 1_000_000, True)
    assert core["CREDIT_ADD"].expires_after is None

    with pytest.raises(InvalidArgument):
        ledger.define_operation(
            app="club",
            operation="CLUB_FEE",
            direction="debit",
            default_amount=1,
            expires_after=timedelta(days=1),
        )


def test_a_grant_with_an_expiry_is_listed_with_it_and_replays(ledger: Any) -> None:
    expires_at = (now() + timedelta(days=3)).replace(microsecond=0)
    entry = grant(ledger, "ann", "g1", "PROMO_CREDIT", amount=40, expires_at=expires_at, priority=7)
    assert isinstance(entry, Entry)
    assert (entry.owner_id, entry.operation, entry.amount, entry.balance, entry.replayed) == (
        "ann",
        "PROMO_CREDIT",
        40,
        40,
        False,
    )
    again = grant(ledger, "ann", "g1", "PROMO_CREDIT", amount=40, expires_at=expires_at, priority=7)
    assert again.replayed is True and again.entry_id == entry.entry_id

    [listed] = ledger.list_grants(owner_id="ann")
    assert isinstance(listed, Grant)
    assert (
        listed.entry_id,
        listed.owner_id,
        listed.app,
        listed.operation,
        listed.amount,
        listed.remaining,
        listed.priority,
        listed.expires_at,
        listed.status,
    ) == (entry.entry_id, "ann", "core", "PROMO_CREDIT", 40, 40, 7, expires_at, "active")
    assert listed.created_at.tzinfo is not None

    # Left to the operation: PROMO_CREDIT's grants last 30 days at priority 10.
    default = grant(ledger, "ann", "g2", "PROMO_CREDIT", amount=5)
    made = grant_of(ledger, "ann", default)
    assert made.priority == 10
    assert made.expires_at is not None
    assert made.expires_at - made.created_at == timedelta(days=30)


def test_the_database_judges_expiry_and_priority(ledger: Any) -> None:
    with pytest.raises(InvalidArgument) as late:
        grant(ledger, "bea", "k1", "PROMO_CREDIT", amount=5, expires_at=now() + timedelta(days=31))
    assert late.value.detail["field"] == "expires_at"
    with pytest.raises(InvalidArgument) as past:
        grant(ledger, "bea", "k2", "CREDIT_ADD", amount=5, expires_at=now() - timedelta(hours=1))
    assert past.value.detail["field"] == "expires_at"
    with pytest.raises(InvalidArgument) as priority:
        grant(ledger, "bea", "k3", "CREDIT_ADD", amount=5, priority=1001)
    assert priority.value.detail["field"] == "priority"
    with pytest.raises(InvalidArgument):
        grant(ledger, "bea", "k4", "CREDIT_SPEND", amount=5)
    with pytest.raises(OperationNotAllowed):
        ledger.grant_credits(
            owner_id="bea", app="core", operation="CONTENT_ACCESS", idempotency_key="k5"
        )
    assert ledger.get_balance(owner_id="bea").balance == 0
    assert ledger.list_grants(owner_id="bea", include_closed=True) == []


def test_debits_spend_grants_in_order_and_say_where_credits_went(ledger: Any) -> None:
    forever = grant(ledger, "cal", "g1", amount=5)  # priority 50, never expires
    promo = grant(ledger, "cal", "g2", "PROMO_CREDIT", amount=3)  # priority 10
    hour = grant(ledger, "cal", "g3", amount=4, expires_at=now() + timedelta(hours=1))
    debit = spend(ledger, "cal", 6, "s1")

    active = ledger.list_grants(owner_id="cal")
    assert [(g.entry_id, g.remaining) for g in active] == [
        (hour.entry_id, 1),  # the same priority: the sooner expiry first
        (forever.entry_id, 5),  # never-expiring last
    ]
    closed = ledger.list_grants(owner_id="cal", include_closed=True)
    assert [(g.entry_id, g.status, g.remaining) for g in closed] == [
        (hour.entry_id, "active", 1),
        (forever.entry_id, "active", 5),
        (promo.entry_id, "spent", 0),
    ]

    ids = {g.entry_id: g.grant_id for g in closed}
    rows = ledger.list_spending(owner_id="cal", entry_id=debit.entry_id)
    assert all(isinstance(r, Spending) for r in rows)
    assert {(r.grant_id, r.amount, r.entry_id, r.operation) for r in rows} == {
        (ids[promo.entry_id], -3, debit.entry_id, "CREDIT_SPEND"),
        (ids[hour.entry_id], -3, debit.entry_id, "CREDIT_SPEND"),
    }
    by_grant = ledger.list_spending(owner_id="cal", grant_id=ids[hour.entry_id])
    assert [(r.entry_id, r.amount) for r in by_grant] == [(debit.entry_id, -3)]
    later = spend(ledger, "cal", 2, "s2")
    newest_first = ledger.list_spending(owner_id="cal")
    assert newest_first[0].entry_id == later.entry_id
    assert len(ledger.list_spending(owner_id="cal", max_rows=1)) == 1
    assert ledger.list_spending(owner_id="nobody") == []


def test_void_removes_what_is_left_once_and_replays(ledger: Any) -> None:
    made = grant(ledger, "dee", "g1", "PROMO_CREDIT", amount=10)
    spent = spend(ledger, "dee", 4, "s1")
    grant_id = grant_of(ledger, "dee", made).grant_id

    void = ledger.void_grant(grant_id=grant_id, app="core", idempotency_key="v1", reason="abuse")
    assert isinstance(void, Entry)
    assert (void.owner_id, void.amount, void.balance, void.replayed) == ("dee", -6, 0, False)
    again = ledger.void_grant(
        grant_id=grant_id, app="core", idempotency_key="v1", reason="abuse", owner_id="dee"
    )
    assert again.replayed is True and again.entry_id == void.entry_id

    assert ledger.list_grants(owner_id="dee") == []
    voided = grant_of(ledger, "dee", made)
    assert (voided.status, voided.remaining) == ("voided", 0)
    movements = ledger.list_spending(owner_id="dee", grant_id=grant_id)
    assert [(r.entry_id, r.amount) for r in movements] == [
        (void.entry_id, -6),
        (spent.entry_id, -4),
    ]
    with pytest.raises(GrantNotActive) as gone:
        ledger.void_grant(grant_id=grant_id, app="core", idempotency_key="v2")
    assert (gone.value.code, gone.value.sqlstate) == ("grant_not_active", GrantNotActive.sqlstate)


def test_void_is_the_granting_apps_and_of_a_known_grant(ledger: Any) -> None:
    ledger.define_app(app="shop")
    made = grant(ledger, "eve", "g1", amount=5)
    grant_id = grant_of(ledger, "eve", made).grant_id
    with pytest.raises(OperationNotAllowed):
        ledger.void_grant(grant_id=grant_id, app="shop", idempotency_key="v1")
    with pytest.raises(NotFound):
        ledger.void_grant(grant_id=grant_id + 1000, app="core", idempotency_key="v2")
    with pytest.raises(NotFound):
        ledger.void_grant(grant_id=grant_id, app="core", idempotency_key="v3", owner_id="other")
    assert ledger.get_balance(owner_id="eve").balance == 5


def test_expired_credits_are_gone_then_expire_grants_writes_them_off(ledger: Any) -> None:
    start = now() - timedelta(minutes=1)
    grant(ledger, "fin", "g1", amount=2)
    expires_at = now() + SOON
    short = grant(ledger, "fin", "g2", amount=7, expires_at=expires_at)
    assert ledger.get_balance(owner_id="fin").balance == 9
    wait_until_past(expires_at)

    # Gone for every reader before any EXPIRE entry is written.
    assert ledger.get_balance(owner_id="fin").balance == 2
    assert [g.remaining for g in ledger.list_grants(owner_id="fin")] == [2]

    assert ledger.expire_grants() == 1
    assert ledger.expire_grants(max_rows=10) == 0
    expired = grant_of(ledger, "fin", short)
    assert (expired.status, expired.remaining) == ("expired", 0)
    [movement] = ledger.list_spending(owner_id="fin", grant_id=expired.grant_id)
    assert (movement.operation, movement.amount) == ("EXPIRE", -7)
    assert ledger.get_balance(owner_id="fin").balance == 2

    rows = ledger.app_report(app="core", from_time=start, to_time=now() + timedelta(minutes=1))
    credit_add = next(r for r in rows if r.operation == "CREDIT_ADD")
    assert (credit_add.credited, credit_add.expired, credit_add.voided) == (9, 7, 0)
    assert ledger.verify() == []


def test_report_counts_voided_credits(ledger: Any) -> None:
    start = now() - timedelta(minutes=1)
    made = grant(ledger, "gus", "g1", "PROMO_CREDIT", amount=8)
    ledger.void_grant(
        grant_id=grant_of(ledger, "gus", made).grant_id, app="core", idempotency_key="v"
    )
    rows = ledger.app_report(app="core", from_time=start, to_time=now() + timedelta(minutes=1))
    promo = next(r for r in rows if r.operation == "PROMO_CREDIT")
    assert (promo.credited, promo.expired, promo.voided) == (8, 0, 8)


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        (
            "grant_credits",
            {
                "owner_id": "o",
                "app": "core",
                "operation": "PROMO_CREDIT",
                "idempotency_key": "k",
                "amount": 1,
                "expires_at": "2030-01-01T00:00:00Z",
            },
            "expires_at",
        ),
        (
            "grant_credits",
            {
                "owner_id": "o",
                "app": "core",
                "operation": "PROMO_CREDIT",
                "idempotency_key": "k",
                "priority": 1.0,
            },
            "priority",
        ),
        (
            "define_operation",
            {"app": "core", "operation": "X_BONUS", "direction": "credit", "expires_after": 3600},
            "expires_after",
        ),
        ("list_grants", {"owner_id": "o", "include_closed": "yes"}, "include_closed"),
        ("void_grant", {"grant_id": 1.0, "app": "core", "idempotency_key": "k"}, "grant_id"),
        ("list_spending", {"owner_id": "o", "grant_id": True}, "grant_id"),
    ],
    ids=["str expires_at", "float priority", "int expires_after", "str flag", "float id", "bool"],
)
def test_wrong_python_types_are_refused_before_any_round_trip(
    method: str, params: dict[str, Any], field: str
) -> None:
    """This Ledger's database does not exist: the refusal comes first."""
    ledger = Ledger("postgresql://nobody@127.0.0.1:1/none", timeout=0.5)
    try:
        with pytest.raises(InvalidArgument) as caught:
            getattr(ledger, method)(**params)
        assert caught.value.detail["field"] == field
        assert ledger.pool.closed
    finally:
        ledger.close()
