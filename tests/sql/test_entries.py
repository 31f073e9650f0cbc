"""post_entry, get_balance, get_entry, list_entries, balance_at: behaviour and errors."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb

from .helpers import balance, call, counts, one, post


def test_credit_with_default_and_chosen_amount(conn):
    first = post(conn, "alice", "CREDIT_ADD", "k1")
    assert (first["amount"], first["balance"], first["replayed"]) == (10, 10, False)
    second = post(conn, "alice", "CREDIT_ADD", "k2", amount=25)
    assert (second["amount"], second["balance"]) == (25, 35)
    assert second["entry_id"] > first["entry_id"]
    assert balance(conn, "alice") == 35


def test_debit_is_signed_by_the_operation(conn):
    post(conn, "bob", "CREDIT_ADD", "k1", amount=10)
    spent = post(conn, "bob", "CREDIT_SPEND", "k2", amount=4)
    assert (spent["amount"], spent["balance"]) == (-4, 6)
    default_spend = post(conn, "bob", "CREDIT_SPEND", "k3")
    assert (default_spend["amount"], default_spend["balance"]) == (-1, 5)


def test_get_balance_of_unknown_owner_is_zero(conn):
    row = one(conn, "get_balance", owner_id="nobody")
    assert row == {
        "owner_id": "nobody",
        "balance": 0,
        "held": 0,
        "available": 0,
        "updated_at": None,
    }


def test_get_balance_reports_holds(conn):
    post(conn, "carol", "CREDIT_ADD", "k1", amount=20)
    one(
        conn,
        "create_hold",
        owner_id="carol",
        app="example_app",
        operation="CONTENT_CREATION",
        idempotency_key="h1",
    )
    row = one(conn, "get_balance", owner_id="carol")
    assert (row["balance"], row["held"], row["available"]) == (20, 5, 15)
    assert row["updated_at"] is not None


def test_replay_returns_the_original_and_writes_nothing(conn):
    original = post(conn, "dave", "CREDIT_ADD", "same", amount=7, metadata='{"order": 1}')
    before = counts(conn)
    again = post(conn, "dave", "CREDIT_ADD", "same", amount=7, metadata='{"order": 1}')
    assert again == {**original, "replayed": True}
    assert counts(conn) == before
    assert balance(conn, "dave") == 7


def test_replay_ignores_json_key_order_and_spacing(conn):
    post(conn, "dave", "CREDIT_ADD", "k", amount=7, metadata='{"a": 1, "b": 2}')
    again = post(conn, "dave", "CREDIT_ADD", "k", amount=7, metadata='{"b":2,"a":1}')
    assert again["replayed"] is True


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 8},
        {"metadata": '{"order": 2}'},
        {"operation": "CREDIT_SPEND"},
        {"amount": None},  # NULL (the default) is a different request from an explicit 7
    ],
)
def test_same_key_different_request_is_a_conflict(conn, change):
    post(conn, "dave", "CREDIT_ADD", "k", amount=7, metadata='{"order": 1}')
    before = counts(conn)
    params = {
        "owner_id": "dave",
        "operation": "CREDIT_ADD",
        "amount": 7,
        "metadata": '{"order": 1}',
        **change,
    }
    with pytest.raises(psycopg.Error) as err:
        post(conn, key="k", **params)
    assert err.value.sqlstate == "LG005"
    assert json.loads(err.value.diag.message_detail) == {"app": "core", "idempotency_key": "k"}
    assert counts(conn) == before


def test_null_amount_and_explicit_default_are_different_requests(conn):
    post(conn, "fred", "CREDIT_ADD", "k")  # default 10
    with pytest.raises(psycopg.Error) as err:
        post(conn, "fred", "CREDIT_ADD", "k", amount=10)
    assert err.value.sqlstate == "LG005"


def test_keys_are_scoped_per_app(conn):
    a = post(conn, "gina", "CREDIT_ADD", "shared-key", amount=5, app="core")
    b = post(conn, "gina", "CREDIT_ADD", "shared-key", amount=5, app="example_app")
    assert a["entry_id"] != b["entry_id"]
    assert not b["replayed"]
    assert balance(conn, "gina") == 10


def test_key_used_by_a_hold_is_a_conflict_for_post_entry(conn):
    post(conn, "hank", "CREDIT_ADD", "k1", amount=10, app="example_app")
    one(
        conn,
        "create_hold",
        owner_id="hank",
        app="example_app",
        operation="CONTENT_CREATION",
        idempotency_key="h",
    )
    with pytest.raises(psycopg.Error) as err:
        post(conn, "hank", "CREDIT_SPEND", "h", app="example_app")
    assert err.value.sqlstate == "LG005"


def test_metadata_is_stored_and_jsonb_values_are_accepted(conn):
    entry = post(conn, "ivan", "CREDIT_ADD", "k1", metadata='{"purchase": "p-1", "n": [1, 2]}')
    stored = one(conn, "get_entry", entry_id=entry["entry_id"])
    assert stored["metadata"] == {"purchase": "p-1", "n": [1, 2]}
    typed = one(
        conn,
        "post_entry",
        owner_id="ivan",
        app="core",
        operation="CREDIT_ADD",
        idempotency_key="k2",
        metadata=Jsonb({"typed": True}),
    )
    assert one(conn, "get_entry", entry_id=typed["entry_id"])["metadata"] == {"typed": True}


def test_get_entry_row(conn):
    entry = post(conn, "judy", "CREDIT_ADD", "k1", amount=3)
    row = one(conn, "get_entry", entry_id=entry["entry_id"])
    assert row["owner_id"] == "judy"
    assert (row["app"], row["operation"], row["amount"], row["balance"]) == (
        "core",
        "CREDIT_ADD",
        3,
        3,
    )
    assert row["idempotency_key"] == "k1"
    assert row["created_at"] == entry["created_at"]
    assert row["created_by"] == "postgres"


def test_get_entry_unknown_is_not_found(conn):
    with pytest.raises(psycopg.Error) as err:
        one(conn, "get_entry", entry_id=424242)
    assert err.value.sqlstate == "LG008"


def test_list_entries_pages_newest_first(conn):
    ids = [post(conn, "kim", "CREDIT_ADD", f"k{i}", amount=1)["entry_id"] for i in range(25)]
    post(conn, "other", "CREDIT_ADD", "x")
    seen = []
    after = None
    while True:
        page = call(conn, "list_entries", owner_id="kim", after_id=after, max_rows=10)
        if not page:
            break
        assert len(page) <= 10
        seen += [row["entry_id"] for row in page]
        after = page[-1]["entry_id"]
    assert seen == sorted(ids, reverse=True)
    assert [r["balance"] for r in call(conn, "list_entries", owner_id="kim", max_rows=3)] == [
        25,
        24,
        23,
    ]


@pytest.mark.parametrize("max_rows", [0, -1, 1001, None])
def test_list_entries_bounds_max_rows(conn, max_rows):
    with pytest.raises(psycopg.Error) as err:
        call(conn, "list_entries", owner_id="kim", max_rows=max_rows)
    assert err.value.sqlstate == "LG007"


def test_balance_at_past_instants(conn):
    start = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    entries = []
    for i, amount in enumerate([5, 7, 11]):
        time.sleep(0.01)
        entries.append(post(conn, "liz", "CREDIT_ADD", f"k{i}", amount=amount))
    assert one(conn, "balance_at", owner_id="liz", at=start)["balance_at"] == 0
    for entry in entries:
        assert (
            one(conn, "balance_at", owner_id="liz", at=entry["created_at"])["balance_at"]
            == entry["balance"]
        )
    between = entries[1]["created_at"] + (entries[2]["created_at"] - entries[1]["created_at"]) / 2
    assert one(conn, "balance_at", owner_id="liz", at=between)["balance_at"] == 12
    now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    assert one(conn, "balance_at", owner_id="liz", at=now)["balance_at"] == 23


def test_signup_credit_once_ever(conn):
    first = post(conn, "max", "SIGNUP_CREDIT", "signup-1")
    assert (first["amount"], first["balance"]) == (3, 3)
    # The same key is a replay, a new key is the limit.
    assert post(conn, "max", "SIGNUP_CREDIT", "signup-1")["replayed"] is True
    before = counts(conn)
    with pytest.raises(psycopg.Error) as err:
        post(conn, "max", "SIGNUP_CREDIT", "signup-2")
    assert err.value.sqlstate == "LG004"
    assert json.loads(err.value.diag.message_detail)["limit_per"] == "ever"
    assert counts(conn) == before
    # Another owner is not limited by max's claim.
    assert post(conn, "ned", "SIGNUP_CREDIT", "signup-3")["amount"] == 3


def test_daily_reward_once_per_utc_day(conn):
    post(conn, "olga", "DAILY_REWARD", "d1")
    with pytest.raises(psycopg.Error) as err:
        post(conn, "olga", "DAILY_REWARD", "d2")
    assert err.value.sqlstate == "LG004"


def test_daily_reward_claimed_yesterday_can_be_claimed_today(conn):
    # A backdated claim, planted as the schema owner (no public parameter moves the clock).
    conn.execute("SET ROLE ledger_schema_owner")
    conn.execute("INSERT INTO ledger.accounts (owner_id, balance, last_seq) VALUES ('pat', 1, 1)")
    conn.execute(
        "INSERT INTO ledger.entries"
        " (owner_id, seq, app, operation, amount, balance, created_at, created_by)"
        " VALUES ('pat', 1, 'core', 'DAILY_REWARD', 1, 1,"
        " date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 second', 'test')"
    )
    conn.execute(
        "INSERT INTO ledger.grants"
        " (owner_id, entry_id, seq, app, operation, amount, remaining, priority, created_at)"
        " SELECT owner_id, entry_id, seq, app, operation, amount, amount, 50, created_at"
        " FROM ledger.entries WHERE owner_id = 'pat'"
    )
    conn.execute("RESET ROLE")
    today = post(conn, "pat", "DAILY_REWARD", "today")
    assert today["balance"] == 2
    with pytest.raises(psycopg.Error) as err:
        post(conn, "pat", "DAILY_REWARD", "again")
    assert err.value.sqlstate == "LG004"
    assert call(conn, "verify") == []


def test_insufficient_credits_names_owner_needed_available(conn):
    post(conn, "quinn", "CREDIT_ADD", "k1", amount=3)
    before = counts(conn)
    with pytest.raises(psycopg.Error) as err:
        post(conn, "quinn", "CREDIT_SPEND", "k2", amount=5)
    assert err.value.sqlstate == "LG001"
    assert json.loads(err.value.diag.message_detail) == {
        "owner_id": "quinn",
        "needed": 5,
        "available": 3,
    }
    assert counts(conn) == before
    assert balance(conn, "quinn") == 3


def test_debit_of_unknown_owner_creates_no_account(conn):
    with pytest.raises(psycopg.Error) as err:
        post(conn, "ghost", "CREDIT_SPEND", "k1")
    assert err.value.sqlstate == "LG001"
    assert counts(conn) == (0, 0, 0)


def test_a_debit_cannot_spend_held_credits(conn):
    post(conn, "rita", "CREDIT_ADD", "k1", amount=6, app="example_app")
    one(
        conn,
        "create_hold",
        owner_id="rita",
        app="example_app",
        operation="CONTENT_CREATION",
        idempotency_key="h1",
    )
    with pytest.raises(psycopg.Error) as err:
        post(conn, "rita", "CREDIT_SPEND", "k2", amount=2, app="example_app")
    assert err.value.sqlstate == "LG001"
    assert post(conn, "rita", "CREDIT_SPEND", "k3", amount=1, app="example_app")["balance"] == 5


LONG = "x" * 300


@pytest.mark.parametrize(
    ("params", "sqlstate"),
    [
        ({"owner_id": None}, "LG007"),
        ({"owner_id": ""}, "LG007"),
        ({"owner_id": LONG}, "LG007"),
        ({"key": None}, "LG007"),
        ({"key": ""}, "LG007"),
        ({"key": LONG}, "LG007"),
        ({"app": None}, "LG007"),
        ({"app": "no_such_app"}, "LG011"),
        ({"operation": None}, "LG007"),
        ({"operation": "NO_SUCH_OP"}, "LG002"),
        ({"operation": "CONTENT_ACCESS"}, "LG003"),  # example_app's operation used by core
        ({"operation": "TRANSFER_IN"}, "LG003"),  # system operations have their own functions
        ({"operation": "REVERSAL"}, "LG003"),
        ({"amount": 0}, "LG006"),
        ({"amount": -5}, "LG006"),
        ({"amount": Decimal("1.5")}, "LG006"),
        ({"amount": 2**63}, "LG006"),
        ({"amount": 10**30}, "LG006"),
        ({"amount": 1_000_001}, "LG006"),  # above CREDIT_ADD's max_amount
        ({"operation": "SIGNUP_CREDIT", "amount": 50}, "LG006"),  # fixed amount
        ({"metadata": "[1, 2]"}, "LG007"),
        ({"metadata": '"text"'}, "LG007"),
        ({"metadata": "not json"}, "LG007"),
        ({"metadata": '{"a": "\\u0000"}'}, "LG007"),
        ({"metadata": '{"a": "' + "y" * 70000 + '"}'}, "LG007"),
    ],
)
def test_bad_input_gets_its_code_and_writes_nothing(conn, params, sqlstate):
    post(conn, "sam", "CREDIT_ADD", "seed", amount=100)
    before = counts(conn)
    call_params = {
        "owner_id": "sam",
        "operation": "CREDIT_ADD",
        "key": "new",
        "amount": 5,
        "metadata": "{}",
        "app": "core",
        **params,
    }
    with pytest.raises(psycopg.Error) as err:
        post(
            conn,
            call_params.pop("owner_id"),
            call_params.pop("operation"),
            call_params.pop("key"),
            **call_params,
        )
    assert err.value.sqlstate == sqlstate, err.value
    assert err.value.diag.message_primary
    assert counts(conn) == before


def test_balance_overflow_is_an_invalid_amount(conn):
    conn.execute("SELECT ledger.define_app('bigapp')")
    conn.execute(
        "SELECT ledger.define_operation(app => 'bigapp', operation => 'HUGE_CREDIT', direction => 'credit',"
        " caller_sets_amount => true)"
    )
    half = 2**62
    one(
        conn,
        "post_entry",
        owner_id="whale",
        app="bigapp",
        operation="HUGE_CREDIT",
        idempotency_key="a",
        amount=half,
    )
    before = counts(conn)
    with pytest.raises(psycopg.Error) as err:
        one(
            conn,
            "post_entry",
            owner_id="whale",
            app="bigapp",
            operation="HUGE_CREDIT",
            idempotency_key="b",
            amount=half,
        )
    assert err.value.sqlstate == "LG006"
    assert counts(conn) == before


def test_positional_and_literal_calls_work_from_sql(conn):
    row = conn.execute(
        "SELECT amount, balance FROM ledger.post_entry('tom', 'core', 'CREDIT_ADD', 'p1', 4, '{\"via\": \"psql\"}')"
    ).fetchone()
    assert row == (4, 4)
    row = conn.execute("SELECT balance FROM ledger.get_balance('tom')").fetchone()
    assert row == (4,)


@pytest.mark.parametrize(
    ("metadata", "key", "path"),
    [
        ('{"order": 1, "order": 2}', "order", "$"),
        ('{"a": {"b": 1, "c": {"d": 1, "d": 1}}}', "d", '$."a"."c"'),
        ('{"lines": [{"sku": "x"}, {"sku": "x", "sku": "y"}]}', "sku", '$."lines"[1]'),
        # Colons inside strings, and a key spelled with an escape: the cheap
        # colon count cannot decide these, the full check must.
        ('{"at": "12:00", "at": "13:00:00"}', "at", "$"),
        ('{"a": 1, "\\u0061": 2}', "a", "$"),
        # jsonb prints \u003a as a colon, which would make up for the dropped key's.
        ('{"a": 1, "a": 2, "b": "\\u003a"}', "a", "$"),
    ],
)
def test_metadata_with_a_duplicate_key_is_lg007_and_writes_nothing(conn, metadata, key, path):
    """jsonb keeps the last of two keys: a reader keeping the first would see
    other metadata than the ledger stored. Refused at any depth."""
    before = counts(conn)
    with pytest.raises(psycopg.Error) as err:
        post(conn, "sam", "CREDIT_ADD", "dup", amount=5, metadata=metadata)
    assert err.value.sqlstate == "LG007"
    detail = json.loads(err.value.diag.message_detail)
    assert detail == {"field": "metadata", "reason": "duplicate key", "key": key, "path": path}
    assert counts(conn) == before
    # The same keys once each are fine, colons and escapes in strings too.
    assert post(
        conn, "sam", "CREDIT_ADD", "ok", amount=5, metadata='{"a": {"b": 1}, "b": [{"b": 2}]}'
    )
    for index, distinct in enumerate(
        ['{"at": "12:00:00", "b": {"c": ":"}}', '{"a": "\\u003a", "\\u0062": ":"}']
    ):
        assert post(conn, "sam", "CREDIT_ADD", f"ok-{index}", amount=5, metadata=distinct)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ('{"a": NaN}', "invalid json"),
        ('{"a": Infinity}', "invalid json"),
        ('{"a": -Infinity}', "invalid json"),
        ('{"a": 1,}', "invalid json"),
        ('{"a": "\\ud800"}', "invalid unicode escape"),
        ('{"a": "\\udc00x"}', "invalid unicode escape"),
        ('{"a": 1e1000000}', "number out of range"),
        ('{"a": "\\u0000"}', "not storable"),
    ],
)
def test_invalid_metadata_is_worded_by_its_reason(conn, metadata, reason):
    """Only text holding \\u0000 is told about \\u0000."""
    before = counts(conn)
    with pytest.raises(psycopg.Error) as err:
        post(conn, "sam", "CREDIT_ADD", "bad-meta", amount=5, metadata=metadata)
    error = err.value
    assert error.sqlstate == "LG007"
    assert json.loads(error.diag.message_detail) == {"field": "metadata", "reason": reason}
    words = f"{error.diag.message_primary} {error.diag.message_hint}"
    assert ("\\u0000" in words) == (reason == "not storable"), words
    assert counts(conn) == before
