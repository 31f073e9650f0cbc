"""define_app, define_operation, list_operations: apps extend the ledger without core changes."""

from __future__ import annotations

import json

import psycopg
import pytest

from .helpers import call, one, post


def test_define_app_is_idempotent(conn):
    first = one(conn, "define_app", app="shop", description="The shop")
    again = one(conn, "define_app", app="shop")
    assert first["app"] == again["app"] == "shop"
    assert again["description"] == "The shop"
    assert conn.execute("SELECT count(*) FROM ledger.apps WHERE app = 'shop'").fetchone() == (1,)


@pytest.mark.parametrize("name", ["Shop", "1shop", "sh op", "", None, "x" * 300])
def test_define_app_rejects_bad_names(conn, name):
    with pytest.raises(psycopg.Error) as err:
        one(conn, "define_app", app=name)
    assert err.value.sqlstate == "LG007"


def test_a_new_app_operation_is_usable_by_that_app_only(conn):
    one(conn, "define_app", app="shop")
    op = one(
        conn,
        "define_operation",
        app="shop",
        operation="SHOP_PURCHASE",
        direction="debit",
        default_amount=2,
        max_amount=50,
        caller_sets_amount=True,
        description="Buying",
    )
    assert (op["direction"], op["default_amount"], op["min_amount"], op["max_amount"]) == (
        "debit",
        2,
        1,
        50,
    )
    post(conn, "amy", "CREDIT_ADD", "fund", amount=10, app="shop")
    assert post(conn, "amy", "SHOP_PURCHASE", "buy", amount=3, app="shop")["balance"] == 7
    with pytest.raises(psycopg.Error) as err:
        post(conn, "amy", "SHOP_PURCHASE", "steal", app="example_app")
    assert err.value.sqlstate == "LG003"
    names = [r["operation"] for r in call(conn, "list_operations", app="shop")]
    assert "SHOP_PURCHASE" in names and "CREDIT_ADD" in names
    assert "CONTENT_ACCESS" not in names and "TRANSFER_IN" not in names
    assert "SHOP_PURCHASE" not in [
        r["operation"] for r in call(conn, "list_operations", app="example_app")
    ]


def test_define_operation_updates_but_never_flips_a_used_direction(conn):
    one(conn, "define_app", app="shop")
    one(
        conn,
        "define_operation",
        app="shop",
        operation="SHOP_BONUS",
        direction="credit",
        default_amount=1,
    )
    # No entries yet: the direction may still change.
    one(
        conn,
        "define_operation",
        app="shop",
        operation="SHOP_BONUS",
        direction="debit",
        default_amount=1,
    )
    one(
        conn,
        "define_operation",
        app="shop",
        operation="SHOP_BONUS",
        direction="credit",
        default_amount=2,
    )
    post(conn, "bo", "SHOP_BONUS", "b1", app="shop")
    with pytest.raises(psycopg.Error) as err:
        one(
            conn,
            "define_operation",
            app="shop",
            operation="SHOP_BONUS",
            direction="debit",
            default_amount=2,
        )
    assert err.value.sqlstate == "LG012"
    updated = one(
        conn,
        "define_operation",
        app="shop",
        operation="SHOP_BONUS",
        direction="credit",
        default_amount=4,
        max_amount=4,
    )
    assert updated["default_amount"] == 4
    assert post(conn, "bo", "SHOP_BONUS", "b2", app="shop")["amount"] == 4


def test_define_operation_cannot_take_another_apps_name(conn):
    one(conn, "define_app", app="shop")
    with pytest.raises(psycopg.Error) as err:
        one(
            conn,
            "define_operation",
            app="shop",
            operation="CREDIT_ADD",
            direction="credit",
            default_amount=1,
        )
    assert err.value.sqlstate == "LG003"


@pytest.mark.parametrize(
    ("params", "sqlstate", "constraint"),
    [
        ({"direction": "sideways"}, "LG007", "operations_direction_valid"),
        ({"direction": None}, "LG007", "operations_direction_required"),
        ({"limit_per": "week"}, "LG007", "operations_limit_per_valid"),
        ({"operation": "lowercase"}, "LG007", "operations_operation_format"),
        ({"default_amount": 0}, "LG006", "operations_default_in_bounds"),
        ({"min_amount": 0}, "LG006", "operations_min_positive"),
        ({"default_amount": 10, "max_amount": 5}, "LG006", "operations_default_in_bounds"),
        (
            {"default_amount": None, "caller_sets_amount": False},
            "LG006",
            "operations_amount_decidable",
        ),
        ({"app": "no_such_app"}, "LG011", None),
    ],
)
def test_define_operation_rejects_bad_rules(conn, params, sqlstate, constraint):
    """The operations table's CHECK constraints are the rules: the error names
    the one that refused the definition, and nothing is stored."""
    one(conn, "define_app", app="shop")
    args = {
        "app": "shop",
        "operation": "SHOP_X",
        "direction": "credit",
        "default_amount": 1,
        **params,
    }
    with pytest.raises(psycopg.Error) as err:
        one(conn, "define_operation", **args)
    assert err.value.sqlstate == sqlstate
    if constraint is not None:
        assert json.loads(err.value.diag.message_detail or "{}")["constraint"] == constraint
    assert conn.execute(
        "SELECT count(*) FROM ledger.operations WHERE operation = 'SHOP_X'"
    ).fetchone() == (0,)


def test_define_app_reports_the_name_constraint(conn):
    with pytest.raises(psycopg.Error) as err:
        one(conn, "define_app", app="Shop")
    assert err.value.sqlstate == "LG007"
    assert json.loads(err.value.diag.message_detail or "{}") == {
        "field": "app",
        "reason": "format",
        "constraint": "apps_app_format",
    }


def test_a_refused_direction_change_leaves_the_operation_as_it_was(conn):
    """LG012 is decided after the upsert: the failed call must not leave the update behind."""
    one(conn, "define_app", app="shop")
    one(
        conn,
        "define_operation",
        app="shop",
        operation="SHOP_B",
        direction="credit",
        default_amount=1,
    )
    post(conn, "bo", "SHOP_B", "b1", app="shop")
    with pytest.raises(psycopg.Error) as err:
        one(
            conn,
            "define_operation",
            app="shop",
            operation="SHOP_B",
            direction="debit",
            default_amount=9,
        )
    assert err.value.sqlstate == "LG012"
    # A flip that also breaks the amount rules is refused for the flip first.
    with pytest.raises(psycopg.Error) as err:
        one(conn, "define_operation", app="shop", operation="SHOP_B", direction="debit")
    assert err.value.sqlstate == "LG012"
    assert conn.execute(
        "SELECT direction, default_amount FROM ledger.operations WHERE operation = 'SHOP_B'"
    ).fetchone() == ("credit", 1)


def test_builtin_operations_are_registered(conn):
    rows = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT operation, app, direction, default_amount, caller_sets_amount, limit_per FROM ledger.operations"
        )
    }
    assert rows["SIGNUP_CREDIT"] == ("core", "credit", 3, False, "ever")
    assert rows["DAILY_REWARD"] == ("core", "credit", 1, False, "day")
    assert rows["CREDIT_ADD"] == ("core", "credit", 10, True, None)
    assert rows["CREDIT_SPEND"] == ("core", "debit", 1, True, None)
    assert rows["CONTENT_CREATION"] == ("example_app", "debit", 5, False, None)
    assert rows["CONTENT_ACCESS"] == ("example_app", "debit", 1, False, None)
    assert {"TRANSFER_OUT", "TRANSFER_IN", "REVERSAL"} <= rows.keys()
