"""Who reads what: balances and history are shared by every app, but an
entry's metadata and idempotency key (and a hold's key) are its writer's.
The read functions take a trailing `app`: given, other apps' private fields
read NULL; NULL (trusted SQL callers, auditors) reads everything."""

from __future__ import annotations

import psycopg
import pytest

from .helpers import call, one, post

PRIVATE_ENTRY_FIELDS = ("metadata", "idempotency_key", "fingerprint")


@pytest.fixture
def written(conn):
    """App alpha's entry and hold, and app beta's entry, on one owner."""
    conn.execute("SELECT ledger.define_app('alpha')")
    conn.execute("SELECT ledger.define_app('beta')")
    a = post(
        conn,
        "ann",
        "CREDIT_ADD",
        "alpha-secret-key",
        amount=50,
        app="alpha",
        metadata='{"order": "alpha-private"}',
    )
    b = post(
        conn, "ann", "CREDIT_SPEND", "beta-key", amount=5, app="beta", metadata='{"note": "beta"}'
    )
    hold = one(
        conn,
        "create_hold",
        owner_id="ann",
        app="alpha",
        operation="CREDIT_SPEND",
        idempotency_key="alpha-hold-key",
        amount=3,
    )
    return a["entry_id"], b["entry_id"], hold["hold_id"]


def test_another_app_sees_the_entry_without_its_private_fields(conn, written):
    alpha_entry, _, _ = written
    seen = one(conn, "get_entry", entry_id=alpha_entry, app="beta")
    assert seen["owner_id"] == "ann" and seen["amount"] == 50 and seen["balance"] == 50
    assert seen["app"] == "alpha"
    assert [seen[f] for f in PRIVATE_ENTRY_FIELDS] == [None, None, None]


def test_the_writing_app_and_a_trusted_caller_see_everything(conn, written):
    alpha_entry, _, _ = written
    for app in ("alpha", None):
        seen = one(conn, "get_entry", entry_id=alpha_entry, app=app)
        assert seen["metadata"] == {"order": "alpha-private"}
        assert seen["idempotency_key"] == "alpha-secret-key"
        assert seen["fingerprint"] is not None
    # The old call without `app` still works and reads everything.
    assert one(conn, "get_entry", entry_id=alpha_entry)["idempotency_key"] == "alpha-secret-key"


def test_history_shows_every_row_and_only_the_readers_private_fields(conn, written):
    alpha_entry, beta_entry, _ = written
    rows = call(conn, "list_entries", owner_id="ann", app="beta")
    assert [r["entry_id"] for r in rows] == [beta_entry, alpha_entry]  # newest first, all rows
    by_id = {r["entry_id"]: r for r in rows}
    assert by_id[beta_entry]["metadata"] == {"note": "beta"}
    assert by_id[beta_entry]["idempotency_key"] == "beta-key"
    assert [by_id[alpha_entry][f] for f in PRIVATE_ENTRY_FIELDS] == [None, None, None]
    # Keyset pagination is unchanged by the filter.
    page = call(conn, "list_entries", owner_id="ann", after_id=beta_entry, max_rows=1, app="beta")
    assert [r["entry_id"] for r in page] == [alpha_entry]
    assert page[0]["metadata"] is None
    everything = call(conn, "list_entries", owner_id="ann")
    assert {r["idempotency_key"] for r in everything} == {"alpha-secret-key", "beta-key"}


def test_another_apps_hold_hides_its_key(conn, written):
    _, _, hold_id = written
    seen = one(conn, "get_hold", hold_id=hold_id, app="beta")
    assert (seen["app"], seen["amount"], seen["status"]) == ("alpha", 3, "active")
    assert (seen["idempotency_key"], seen["fingerprint"]) == (None, None)
    listed = call(conn, "list_holds", owner_id="ann", app="beta")
    assert [(h["hold_id"], h["idempotency_key"]) for h in listed] == [(hold_id, None)]
    for app in ("alpha", None):
        assert (
            one(conn, "get_hold", hold_id=hold_id, app=app)["idempotency_key"] == "alpha-hold-key"
        )
        assert call(conn, "list_holds", owner_id="ann", app=app)[0]["idempotency_key"] == (
            "alpha-hold-key"
        )


def test_balances_stay_shared(conn, written):
    assert one(conn, "get_balance", owner_id="ann")["available"] == 50 - 5 - 3


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM ledger.get_entry(1, app => 'no_such_app')",
        "SELECT * FROM ledger.list_entries('ann', app => 'no_such_app')",
        "SELECT * FROM ledger.get_hold(1, app => 'no_such_app')",
        "SELECT * FROM ledger.list_holds('ann', app => 'no_such_app')",
    ],
)
def test_an_unknown_app_is_refused(conn, written, statement):
    with pytest.raises(psycopg.Error) as err:
        conn.execute(statement)
    assert err.value.sqlstate == "LG011"


def test_each_read_has_one_signature(conn):
    """The trailing app, then the trailing owner_id, replaced the old signatures
    (no ambiguous overloads)."""
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'ledger' AND p.proname IN ('get_entry', 'list_entries', 'get_hold', 'list_holds')"
        " ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == [
        "ledger.get_entry(bigint,text,text)",
        "ledger.get_hold(bigint,text,text)",
        "ledger.list_entries(text,bigint,integer,text)",
        "ledger.list_holds(text,text)",
    ]


@pytest.mark.parametrize("role", ["ledger_app", "ledger_reader", "ledger_owner"])
def test_every_reading_role_may_call_them_with_app(conn, written, role):
    alpha_entry, _, hold_id = written
    conn.execute(f"SET ROLE {role}")
    assert one(conn, "get_entry", entry_id=alpha_entry, app="beta")["metadata"] is None
    assert call(conn, "list_entries", owner_id="ann", app="beta")[-1]["metadata"] is None
    assert one(conn, "get_hold", hold_id=hold_id, app="beta")["idempotency_key"] is None
    assert call(conn, "list_holds", owner_id="ann", app="beta")[0]["idempotency_key"] is None
