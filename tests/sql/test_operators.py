"""The operator functions (any app's entries, grants and holds, with who and
why recorded) and the console's reads and sign-in bookkeeping."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from .helpers import balance, call, counts, login_member, one, post


def actions(conn: psycopg.Connection[Any], owner: str) -> list[dict[str, Any]]:
    return call(conn, "list_operator_actions", owner_id=owner)


def events_of(conn: psycopg.Connection[Any], owner: str, type_: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT payload FROM ledger.events WHERE owner_id = %s AND type = %s ORDER BY seq, event_id",
        (owner, type_),
    ).fetchall()
    return [row[0] for row in rows]


def refused(conn: psycopg.Connection[Any], sqlstate: str, function: str, **params: Any) -> Any:
    before = counts(conn), conn.execute("SELECT count(*) FROM ledger.operator_actions").fetchone()
    with pytest.raises(psycopg.Error) as info:
        call(conn, function, **params)
    assert info.value.sqlstate == sqlstate, str(info.value)
    after = counts(conn), conn.execute("SELECT count(*) FROM ledger.operator_actions").fetchone()
    assert after == before
    return info.value


def test_reverse_another_apps_entry_records_the_operator_and_the_reason(conn):
    post(conn, "ann", "CREDIT_ADD", "c1", amount=10)
    charge = post(conn, "ann", "CONTENT_ACCESS", "a1", app="example_app")
    assert balance(conn, "ann") == 9
    [undo] = call(
        conn,
        "operator_reverse_entry",
        operator="alice.ops",
        reason="charged twice for content 7",
        entry_id=charge["entry_id"],
        idempotency_key="t-1",
    )
    assert (undo["app"], undo["operation"], undo["amount"], undo["balance"], undo["replayed"]) == (
        "example_app",
        "REVERSAL",
        1,
        10,
        False,
    )
    stored = one(conn, "get_entry", entry_id=undo["entry_id"])
    assert stored["reverses_entry_id"] == charge["entry_id"]
    assert stored["metadata"]["reason"] == "charged twice for content 7"
    assert stored["idempotency_key"] == "operator:t-1"
    [action] = actions(conn, "ann")
    assert (action["action"], action["operator"], action["reason"], action["entry_id"]) == (
        "reverse_entry",
        "alice.ops",
        "charged twice for content 7",
        undo["entry_id"],
    )
    # The change wrote its events, as every change does.
    [reversed_event] = events_of(conn, "ann", "entry.reversed")
    assert reversed_event["reversal_entry_id"] == undo["entry_id"]
    # A retry replays and records nothing again; another reason under the key is LG005.
    [again] = call(
        conn,
        "operator_reverse_entry",
        operator="alice.ops",
        reason="charged twice for content 7",
        entry_id=charge["entry_id"],
        idempotency_key="t-1",
    )
    assert again["replayed"] and again["entry_id"] == undo["entry_id"]
    assert len(actions(conn, "ann")) == 1
    refused(
        conn,
        "LG005",
        "operator_reverse_entry",
        operator="alice.ops",
        reason="another reason",
        entry_id=charge["entry_id"],
        idempotency_key="t-1",
    )
    # The reversal shows in the history with who and why.
    [first, *_] = call(conn, "owner_history", owner_id="ann")
    assert (first["entry_id"], first["operator"], first["reason"]) == (
        undo["entry_id"],
        "alice.ops",
        "charged twice for content 7",
    )
    reversed_row = next(
        r
        for r in call(conn, "owner_history", owner_id="ann")
        if r["entry_id"] == charge["entry_id"]
    )
    assert reversed_row["reversed_by"] == undo["entry_id"]


@pytest.mark.parametrize("reason", [None, "", "   ", "x" * 1001])
def test_a_reason_is_required(conn, reason):
    post(conn, "bo", "CREDIT_ADD", "c1", amount=10)
    charge = post(conn, "bo", "CREDIT_SPEND", "d1", amount=3)
    error = refused(
        conn,
        "LG007",
        "operator_reverse_entry",
        operator="ops",
        reason=reason,
        entry_id=charge["entry_id"],
        idempotency_key="k",
    )
    assert json.loads(error.diag.message_detail)["field"] == "reason"
    for function, target in (
        ("operator_void_grant", {"grant_id": 1}),
        ("operator_release_hold", {"hold_id": 1}),
        ("operator_grant_credits", {"owner_id": "bo", "app": "core", "operation": "CREDIT_ADD"}),
    ):
        error = refused(
            conn, "LG007", function, operator="ops", reason=reason, idempotency_key="k", **target
        )
        assert json.loads(error.diag.message_detail)["field"] == "reason"


def test_unknown_targets_and_bad_operators(conn):
    for function, target in (
        ("operator_reverse_entry", {"entry_id": 999}),
        ("operator_void_grant", {"grant_id": 999}),
        ("operator_release_hold", {"hold_id": 999}),
    ):
        refused(conn, "LG008", function, operator="ops", reason="r", idempotency_key="k", **target)
    refused(
        conn,
        "LG007",
        "operator_reverse_entry",
        operator="",
        reason="r",
        entry_id=1,
        idempotency_key="k",
    )


def test_grant_and_void_as_an_operator(conn):
    made = one(
        conn,
        "operator_grant_credits",
        operator="ops",
        reason="goodwill after outage",
        owner_id="cy",
        app="core",
        operation="PROMO_CREDIT",
        idempotency_key="g-1",
        amount=25,
    )
    assert (made["amount"], made["balance"], made["replayed"]) == (25, 25, False)
    entry = one(conn, "get_entry", entry_id=made["entry_id"])
    assert entry["metadata"] == {"operator": "ops", "reason": "goodwill after outage"}
    [grant] = call(conn, "list_grants", owner_id="cy")
    [action] = actions(conn, "cy")
    assert (action["action"], action["grant_id"], action["entry_id"]) == (
        "grant_credits",
        grant["grant_id"],
        made["entry_id"],
    )
    post(conn, "cy", "CREDIT_SPEND", "s1", amount=5)
    void = one(
        conn,
        "operator_void_grant",
        operator="bob",
        reason="promo given by mistake",
        grant_id=grant["grant_id"],
        idempotency_key="v-1",
    )
    assert (void["operation"], void["amount"], void["balance"]) == ("VOID", -20, 0)
    assert [a["action"] for a in actions(conn, "cy")] == ["void_grant", "grant_credits"]
    [voided] = events_of(conn, "cy", "grant.voided")
    assert voided["reason"] == "promo given by mistake"
    # Nothing left: LG014, nothing written.
    refused(
        conn,
        "LG014",
        "operator_void_grant",
        operator="bob",
        reason="again",
        grant_id=grant["grant_id"],
        idempotency_key="v-2",
    )


def test_release_another_apps_hold(conn):
    post(conn, "di", "CREDIT_ADD", "c1", amount=10)
    hold = one(
        conn,
        "create_hold",
        owner_id="di",
        app="example_app",
        operation="CONTENT_CREATION",
        idempotency_key="h1",
    )
    assert one(conn, "get_balance", owner_id="di")["available"] == 5
    released = one(
        conn,
        "operator_release_hold",
        operator="ops",
        reason="stuck after a crash",
        hold_id=hold["hold_id"],
        idempotency_key="r-1",
    )
    assert (released["status"], released["replayed"]) == ("released", False)
    assert one(conn, "get_balance", owner_id="di")["available"] == 10
    [action] = call(conn, "list_operator_actions", owner_id="di", hold_id=hold["hold_id"])
    assert (action["action"], action["reason"], action["app"]) == (
        "release_hold",
        "stuck after a crash",
        "example_app",
    )
    assert len(events_of(conn, "di", "hold.released")) == 1
    again = one(
        conn,
        "operator_release_hold",
        operator="ops",
        reason="stuck after a crash",
        hold_id=hold["hold_id"],
        idempotency_key="r-1",
    )
    assert again["replayed"]
    assert len(actions(conn, "di")) == 1


def test_only_ledger_operator_may_correct(conn):
    post(conn, "ed", "CREDIT_ADD", "c1", amount=10)
    charge = post(conn, "ed", "CREDIT_SPEND", "d1", amount=2)
    for group in ("ledger_app", "ledger_reader", "ledger_owner", "ledger_console"):
        role = login_member(conn, group)
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        try:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                call(
                    conn,
                    "operator_reverse_entry",
                    operator="ops",
                    reason="r",
                    entry_id=charge["entry_id"],
                    idempotency_key="k",
                )
        finally:
            conn.execute("RESET ROLE")
    role = login_member(conn, "ledger_operator")
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        [undo] = call(
            conn,
            "operator_reverse_entry",
            operator="ops",
            reason="refund",
            entry_id=charge["entry_id"],
            idempotency_key="k",
        )
    finally:
        conn.execute("RESET ROLE")
    assert one(conn, "get_entry", entry_id=undo["entry_id"])["created_by"] == role
    assert actions(conn, "ed")[0]["operator"] == "ops"


def test_history_is_keyset_paginated_and_filtered(conn):
    post(conn, "fa", "CREDIT_ADD", "c0", amount=100)
    for i in range(9):
        post(conn, "fa", "CREDIT_SPEND", f"d{i}", amount=1)
    post(conn, "fa", "CONTENT_ACCESS", "a1", app="example_app")
    page1 = call(conn, "owner_history", owner_id="fa", max_rows=4)
    assert [r["seq"] for r in page1] == [11, 10, 9, 8]
    page2 = call(conn, "owner_history", owner_id="fa", max_rows=4, before_seq=page1[-1]["seq"])
    assert [r["seq"] for r in page2] == [7, 6, 5, 4]
    only_app = call(conn, "owner_history", owner_id="fa", app="example_app")
    assert [r["operation"] for r in only_app] == ["CONTENT_ACCESS"]
    only_op = call(conn, "owner_history", owner_id="fa", operation="CREDIT_ADD")
    assert [r["seq"] for r in only_op] == [1]
    refused(conn, "LG007", "owner_history", owner_id="fa", max_rows=0)


def test_balance_series(conn):
    assert call(conn, "balance_series", owner_id="nobody", points=10) == []
    post(conn, "gi", "CREDIT_ADD", "c0", amount=10)
    post(conn, "gi", "CREDIT_SPEND", "d0", amount=3)
    points = call(conn, "balance_series", owner_id="gi", points=10)
    assert len(points) == 10
    assert points[0]["balance"] == 10 and points[-1]["balance"] == 7
    assert [p["at"] for p in points] == sorted(p["at"] for p in points)
    refused(conn, "LG007", "balance_series", owner_id="gi", points=1)


def test_overview_reads(conn):
    post(conn, "ha", "CREDIT_ADD", "c0", amount=10)
    post(conn, "ha", "CREDIT_SPEND", "d0", amount=3)
    post(conn, "ha", "CONTENT_ACCESS", "a0", app="example_app")
    post(conn, "hb", "CREDIT_ADD", "c0", amount=5)
    one(
        conn,
        "create_hold",
        owner_id="hb",
        app="example_app",
        operation="CONTENT_CREATION",
        idempotency_key="h1",
        ttl=timedelta(minutes=10),
    )
    one(
        conn,
        "create_hold",
        owner_id="ha",
        app="example_app",
        operation="CONTENT_CREATION",
        idempotency_key="h2",
        ttl=timedelta(hours=3),
    )
    days = call(conn, "daily_activity", days=30)
    by_app = {(r["app"]): r for r in days}
    assert (by_app["core"]["issued"], by_app["core"]["spent"]) == (15, 3)
    assert (by_app["example_app"]["spent"], by_app["example_app"]["held"]) == (1, 10)
    busiest = call(conn, "busiest_owners", max_rows=1)
    assert [(b["owner_id"], b["entries"], b["balance"]) for b in busiest] == [("ha", 3, 6)]
    holds = call(conn, "list_open_holds")
    assert [(h["owner_id"], h["state"]) for h in holds] == [("hb", "expiring"), ("ha", "open")]
    refused(conn, "LG007", "daily_activity", days=0)


def test_verify_runs_are_recorded(conn):
    assert call(conn, "latest_verify") == []
    post(conn, "ia", "CREDIT_ADD", "c0", amount=10)
    run = one(conn, "record_verify")
    assert run["findings"] == 0 and run["sample"] == []
    assert one(conn, "latest_verify")["run_id"] == run["run_id"]


def test_console_sign_in_is_slowed_after_three_failures(conn):
    hashed = "scrypt:32768:8:1$salt$" + "0" * 64
    user = one(
        conn, "set_console_user", name="ann@example.com", role="viewer", password_hash=hashed
    )
    assert (user["role"], user["failed_count"]) == ("viewer", 0)
    assert call(conn, "console_sign_in", name="nobody") == []
    for _ in range(3):
        attempt = one(conn, "console_sign_in", name="ann@example.com")
        assert (attempt["password_hash"], attempt["wait_seconds"]) == (hashed, 0)
    # Three failures in a row (none reported as a success): the next waits.
    blocked = one(conn, "console_sign_in", name="ann@example.com")
    assert blocked["password_hash"] is None and blocked["wait_seconds"] >= 1
    # A wait is not counted as an attempt.
    assert one(conn, "console_user", name="ann@example.com")["failed_count"] == 3
    conn.execute(
        "UPDATE ledger.console_users SET last_failed_at = last_failed_at - interval '2 seconds'"
    )
    allowed = one(conn, "console_sign_in", name="ann@example.com")
    assert allowed["password_hash"] == hashed
    call(conn, "console_signed_in", name="ann@example.com")
    assert one(conn, "console_user", name="ann@example.com")["failed_count"] == 0
    # Many failures wait at most 15 minutes.
    conn.execute("UPDATE ledger.console_users SET failed_count = 60, last_failed_at = now()")
    assert 0 < one(conn, "console_sign_in", name="ann@example.com")["wait_seconds"] <= 900


def test_console_users_input_rules(conn):
    hashed = "scrypt:32768:8:1$salt$" + "0" * 64
    for params, field in (
        ({"name": "bad name", "role": "viewer"}, "name"),
        ({"name": "ok", "role": "admin"}, "role"),
        ({"name": None, "role": "viewer"}, "name"),
    ):
        with pytest.raises(psycopg.Error) as info:
            call(conn, "set_console_user", password_hash=hashed, **params)
        assert info.value.sqlstate == "LG007"
        assert json.loads(info.value.diag.message_detail)["field"] == field
    one(conn, "set_console_user", name="ok", role="operator", password_hash=hashed)
    assert [u["name"] for u in call(conn, "list_console_users")] == ["ok"]
    assert conn.execute("SELECT ledger.remove_console_user('ok')").fetchone() == (True,)
    assert call(conn, "list_console_users") == []


def test_operator_functions_take_their_time_from_the_clock(conn):
    # grant_credits' own expiry rules apply to an operator's grant too.
    now = conn.execute("SELECT clock_timestamp()").fetchone()
    assert now is not None and isinstance(now[0], datetime)
    refused(
        conn,
        "LG007",
        "operator_grant_credits",
        operator="ops",
        reason="r",
        owner_id="jo",
        app="core",
        operation="PROMO_CREDIT",
        idempotency_key="k",
        amount=5,
        expires_at=now[0] + timedelta(days=400),
    )
