"""app_report per operation over a time range, and verify()'s hold and transfer checks."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from .helpers import call, login_member, one, post


def report(
    conn: psycopg.Connection[Any], app: str, start: datetime, end: datetime
) -> dict[str, tuple[int, ...]]:
    rows = call(conn, "app_report", app=app, from_time=start, to_time=end)
    assert all(r["app"] == app for r in rows)
    assert [r["operation"] for r in rows] == sorted(r["operation"] for r in rows)
    return {r["operation"]: (r["entries"], r["credited"], r["debited"], r["owners"]) for r in rows}


def clock(conn: psycopg.Connection[Any]) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


@pytest.fixture
def activity(conn):
    """Entries of every kind for app core (one of example_app), an instant in the middle."""
    start = clock(conn)
    post(conn, "ann", "CREDIT_ADD", "c1", amount=10)
    post(conn, "bob", "CREDIT_ADD", "c2", amount=5)
    spend = post(conn, "ann", "CREDIT_SPEND", "d1", amount=4)
    one(
        conn,
        "transfer",
        from_owner="ann",
        to_owner="bob",
        amount=3,
        app="core",
        idempotency_key="t1",
    )
    post(conn, "bob", "CONTENT_ACCESS", "a1", app="example_app")
    middle = clock(conn)
    call(conn, "reverse_entry", entry_id=spend["entry_id"], app="core", idempotency_key="r1")
    call(
        conn,
        "post_entries",
        entries=json.dumps(
            [
                {
                    "owner_id": "cy",
                    "app": "core",
                    "operation": "CREDIT_ADD",
                    "idempotency_key": "b1",
                    "amount": 2,
                },
                {
                    "owner_id": "ann",
                    "app": "core",
                    "operation": "CREDIT_ADD",
                    "idempotency_key": "b2",
                    "amount": 1,
                },
            ]
        ),
    )
    hold = one(
        conn,
        "create_hold",
        owner_id="bob",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h1",
        amount=2,
    )
    one(conn, "capture_hold", hold_id=hold["hold_id"], app="core")
    return conn, start, middle, clock(conn)


def test_report_per_operation(activity):
    conn, start, _, end = activity
    assert report(conn, "core", start, end) == {
        "CREDIT_ADD": (4, 18, 0, 3),
        "CREDIT_SPEND": (2, 0, 6, 2),
        "REVERSAL": (1, 4, 0, 1),
        "TRANSFER_IN": (1, 3, 0, 1),
        "TRANSFER_OUT": (1, 0, 3, 1),
    }
    assert report(conn, "example_app", start, end) == {"CONTENT_ACCESS": (1, 0, 1, 1)}


def test_report_time_range_is_half_open(activity):
    conn, start, middle, end = activity
    assert report(conn, "core", middle, end) == {
        "CREDIT_ADD": (2, 3, 0, 2),
        "CREDIT_SPEND": (1, 0, 2, 1),
        "REVERSAL": (1, 4, 0, 1),
    }
    assert report(conn, "example_app", middle, end) == {}
    first = conn.execute("SELECT min(created_at) FROM ledger.entries").fetchone()[0]
    assert report(conn, "core", start, first) == {}
    assert report(conn, "core", first, first + timedelta(microseconds=1))["CREDIT_ADD"][0] == 1
    assert report(conn, "core", end, end) == {}
    assert report(conn, "core", end, end + timedelta(days=1)) == {}


def test_report_errors(activity):
    conn, start, _, end = activity
    for params, sqlstate in [
        ({"app": "core", "from_time": end, "to_time": start}, "LG007"),
        ({"app": "core", "from_time": None, "to_time": end}, "LG007"),
        ({"app": "core", "from_time": start, "to_time": None}, "LG007"),
        ({"app": "no_app", "from_time": start, "to_time": end}, "LG011"),
        ({"app": "", "from_time": start, "to_time": end}, "LG007"),
    ]:
        with pytest.raises(psycopg.Error) as info:
            call(conn, "app_report", **params)
        assert info.value.sqlstate == sqlstate, params


def test_reader_reports_and_verifies(activity):
    """As a member of ledger_reader (an auditor's login), then of ledger_app."""
    conn, start, _, end = activity
    expected = report(conn, "core", start, end)
    conn.execute(f"SET ROLE {login_member(conn, 'ledger_reader')}")
    assert report(conn, "core", start, end) == expected
    assert call(conn, "verify") == []
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        post(conn, "ann", "CREDIT_ADD", "reader-write", amount=1)
    conn.execute("RESET ROLE")
    conn.execute(f"SET ROLE {login_member(conn, 'ledger_app')}")
    assert report(conn, "core", start, end) == expected
    conn.execute("RESET ROLE")


def _plant_hold(
    conn: psycopg.Connection[Any], owner: str, amount: int, expires_in: str, *, counted: bool = True
) -> None:
    """A hold row written past the functions (as a superuser), as a bug could;
    counted: the account's open_holds moves with it, as create_hold does."""
    conn.execute(
        "INSERT INTO ledger.holds (owner_id, app, operation, amount, idempotency_key, fingerprint,"
        " created_at,"
        " expires_at, created_by) VALUES (%s, 'core', 'CREDIT_SPEND', %s, %s, md5('x')::uuid,"
        " clock_timestamp() - interval '1 hour', clock_timestamp() + %s::interval, 'test')",
        (owner, amount, f"planted-{owner}-{amount}", expires_in),
    )
    if counted:
        conn.execute(
            "UPDATE ledger.accounts SET open_holds = open_holds + 1 WHERE owner_id = %s", (owner,)
        )


def test_verify_reports_open_holds_the_account_does_not_count(activity):
    conn = activity[0]
    _plant_hold(conn, "cy", 1, "1 hour", counted=False)
    rows = call(conn, "verify")
    assert [(r["check_name"], r["owner_id"]) for r in rows] == [("open_holds_count", "cy")]
    assert "open_holds 0" in rows[0]["detail"] and "released 1" in rows[0]["detail"]


def _plant_leg(
    conn: psycopg.Connection[Any], owner: str, operation: str, amount: int, transfer_id: int
) -> None:
    """A transfer leg written past the functions, with the account kept equal to its entries."""
    conn.execute(
        "INSERT INTO ledger.entries (owner_id, seq, app, operation, amount, balance, created_at,"
        " created_by,"
        " transfer_id) SELECT %s, a.last_seq + 1, 'core', %s, %s, a.balance + %s,"
        " clock_timestamp(), 'test', %s"
        " FROM ledger.accounts a WHERE a.owner_id = %s",
        (owner, operation, amount, amount, transfer_id, owner),
    )
    conn.execute(
        "UPDATE ledger.accounts SET balance = balance + %s, last_seq = last_seq + 1"
        " WHERE owner_id = %s",
        (amount, owner),
    )


# What the grant checks say of entries planted past the functions (no grant rows).
GRANT_CHECKS = {"balance_matches_grants", "entry_grants"}


def test_verify_reports_transfer_legs(activity):
    conn = activity[0]
    lonely = conn.execute("SELECT nextval('ledger.transfer_id_seq')").fetchone()[0]
    _plant_leg(conn, "ann", "TRANSFER_OUT", -1, lonely)
    # (The planted legs made no grants: the grant checks name them too.)
    rows = [r for r in call(conn, "verify") if r["check_name"] == "transfer_legs"]
    assert [(r["check_name"], r["owner_id"]) for r in rows] == [("transfer_legs", "ann")]
    assert f"transfer {lonely} has 1 legs summing to -1" == rows[0]["detail"]
    uneven = conn.execute("SELECT nextval('ledger.transfer_id_seq')").fetchone()[0]
    _plant_leg(conn, "ann", "TRANSFER_OUT", -3, uneven)
    _plant_leg(conn, "cy", "TRANSFER_IN", 2, uneven)
    rows = call(conn, "verify")
    assert sorted(r["detail"] for r in rows if r["check_name"] == "transfer_legs") == sorted(
        [
            f"transfer {lonely} has 1 legs summing to -1",
            f"transfer {uneven} has 2 legs summing to -1",
        ]
    )
    assert {r["check_name"] for r in rows} - {"transfer_legs"} <= GRANT_CHECKS
    # a reversed transfer stays healthy: its reversal entries are not legs
    healthy = one(
        conn,
        "transfer",
        from_owner="bob",
        to_owner="cy",
        amount=1,
        app="core",
        idempotency_key="t9",
    )
    call(conn, "reverse_entry", entry_id=healthy["from_entry_id"], app="core", idempotency_key="r9")
    assert len([r for r in call(conn, "verify") if r["check_name"] == "transfer_legs"]) == 2
