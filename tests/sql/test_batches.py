"""post_entries: one transaction for up to 10,000 entries, the rules of post_entry per item."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .helpers import balance, call, counts, lock_waits, login_member, one, post


def batch(
    conn: psycopg.Connection[Any], items: Any, *, as_jsonb: bool = False
) -> list[dict[str, Any]]:
    """post_entries through the text overload (a JSON string) or the jsonb one."""
    value = (
        Jsonb(items)
        if as_jsonb
        else (items if isinstance(items, str) or items is None else json.dumps(items))
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM ledger.post_entries(entries => %s)", (value,))
        return cur.fetchall()


def item(
    owner: str, operation: str, key: str, amount: Any = None, app: str = "core", **extra: Any
) -> dict[str, Any]:
    entry = {"owner_id": owner, "app": app, "operation": operation, "idempotency_key": key}
    if amount is not None:
        entry["amount"] = amount
    entry.update(extra)
    return entry


def seqs_follow_input_order(conn: psycopg.Connection[Any], ids: list[int]) -> bool:
    """Each owner's entries of a batch got its next seqs in input order. (Not
    their ids: on Citus each node draws ids from a range of its own.)"""
    stored = {
        entry_id: (owner, seq)
        for entry_id, owner, seq in conn.execute(
            "SELECT entry_id, owner_id, seq FROM ledger.entries WHERE entry_id = ANY (%s)", (ids,)
        )
    }
    last: dict[str, int] = {}
    for entry_id in ids:
        owner, seq = stored[entry_id]
        if seq != last.get(owner, seq - 1) + 1 and owner in last:
            return False
        last[owner] = seq
    return len(stored) == len(ids)


def batch_error(
    conn: psycopg.Connection[Any], items: Any, sqlstate: str, index: int | None
) -> psycopg.Error:
    """The batch fails with sqlstate, names the item (or none), and writes nothing."""
    before = counts(conn)
    with pytest.raises(psycopg.Error) as info:
        batch(conn, items)
    error = info.value
    assert error.sqlstate == sqlstate, (error.sqlstate, str(error))
    detail = json.loads(error.diag.message_detail or "{}")
    if index is None:
        assert "index" not in detail
    else:
        assert detail["index"] == index, detail
        assert (error.diag.message_primary or "").startswith(f"batch item {index}: "), (
            error.diag.message_primary
        )
    assert counts(conn) == before
    return error


def test_batch_writes_every_item_in_input_order(conn):
    items = [
        item("ann", "CREDIT_ADD", "b1", 50, metadata={"order": 1}),
        item("bob", "CREDIT_ADD", "b2", 7),
        item("ann", "CREDIT_SPEND", "b3", 20),
        item("ann", "SIGNUP_CREDIT", "b4"),
        item("bob", "CONTENT_ACCESS", "b5", app="example_app"),
    ]
    rows = batch(conn, items)
    assert [
        (r["owner_id"], r["operation"], r["amount"], r["balance"], r["replayed"]) for r in rows
    ] == [
        ("ann", "CREDIT_ADD", 50, 50, False),
        ("bob", "CREDIT_ADD", 7, 7, False),
        ("ann", "CREDIT_SPEND", -20, 30, False),
        ("ann", "SIGNUP_CREDIT", 3, 33, False),
        ("bob", "CONTENT_ACCESS", -1, 6, False),
    ]
    assert [r["app"] for r in rows] == ["core"] * 4 + ["example_app"]
    ids = [r["entry_id"] for r in rows]
    assert len(set(ids)) == 5
    assert seqs_follow_input_order(conn, ids)
    stored = conn.execute(  # in input order (not id order: see seqs_follow_input_order)
        "SELECT entry_id, idempotency_key, balance, metadata, created_by"
        " FROM ledger.entries ORDER BY array_position(%s::bigint[], entry_id)",
        (ids,),
    ).fetchall()
    assert [(s[0], s[1], s[2]) for s in stored] == [
        (r["entry_id"], i["idempotency_key"], r["balance"])
        for r, i in zip(rows, items, strict=True)
    ]
    assert stored[0][3] == {"order": 1} and stored[1][3] == {}
    assert {s[4] for s in stored} == {"postgres"}
    assert len({r["created_at"] for r in rows}) == 1
    assert (balance(conn, "ann"), balance(conn, "bob")) == (33, 6)
    assert call(conn, "verify") == []


def test_jsonb_overload_and_json_string_metadata(conn):
    rows = batch(conn, [item("cy", "CREDIT_ADD", "j1", 5, metadata={"a": [1, 2]})], as_jsonb=True)
    assert rows[0]["balance"] == 5 and rows[0]["replayed"] is False
    # metadata may also arrive as JSON text, as post_entry's parameter does
    batch(conn, [item("cy", "CREDIT_ADD", "j2", 5, metadata='{"b": true}')])
    metadata = [m for (m,) in conn.execute("SELECT metadata FROM ledger.entries ORDER BY seq")]
    assert metadata == [{"a": [1, 2]}, {"b": True}]
    # an untyped literal picks the text overload
    rows = conn.execute(
        """SELECT * FROM ledger.post_entries('[{"owner_id": "cy", "app": "core",
             "operation": "CREDIT_ADD",
             "idempotency_key": "j3", "amount": 1}]')"""
    ).fetchall()
    assert len(rows) == 1


def test_repeated_batch_is_a_replay_and_writes_nothing(conn):
    items = [
        item("dee", "CREDIT_ADD", "r1", 9),
        item("dee", "CREDIT_SPEND", "r2", 4, metadata={"x": 1}),
    ]
    first = batch(conn, items)
    before = counts(conn)
    again = batch(conn, items, as_jsonb=True)
    assert again == [{**row, "replayed": True} for row in first]
    assert counts(conn) == before
    assert balance(conn, "dee") == 5


def test_batch_items_and_post_entry_replay_each_other(conn):
    single = post(conn, "eve", "CREDIT_ADD", "shared-1", amount=8, metadata='{"k": "v"}')
    rows = batch(
        conn,
        [
            item("eve", "CREDIT_ADD", "shared-1", 8, metadata={"k": "v"}),
            item("eve", "CREDIT_ADD", "fresh", 2),
        ],
    )
    assert rows[0] == {**single, "replayed": True}
    assert rows[1]["replayed"] is False and rows[1]["balance"] == 10
    again = post(conn, "eve", "CREDIT_ADD", "fresh", amount=2)
    assert again == {**rows[1], "replayed": True}
    assert balance(conn, "eve") == 10


def test_same_key_twice_in_a_batch(conn):
    rows = batch(
        conn,
        [
            item("fay", "CREDIT_ADD", "twice", 3),
            item("fay", "CREDIT_ADD", "other", 1),
            item("fay", "CREDIT_ADD", "twice", 3),
        ],
    )
    assert rows[2] == {**rows[0], "replayed": True}
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == 2
    assert balance(conn, "fay") == 4
    # the same key for a different request inside one batch: LG005 at the second use
    error = batch_error(
        conn,
        [
            item("fay", "CREDIT_ADD", "k-a", 3),
            item("fay", "CREDIT_ADD", "k-b", 3),
            item("fay", "CREDIT_ADD", "k-a", 4),
        ],
        "LG005",
        2,
    )
    assert json.loads(error.diag.message_detail)["idempotency_key"] == "k-a"


def test_key_conflicts_with_stored_entries_and_holds(conn):
    post(conn, "gus", "CREDIT_ADD", "used", amount=10)
    one(
        conn,
        "create_hold",
        owner_id="gus",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="held-key",
        amount=1,
    )
    ok = item("gus", "CREDIT_ADD", "new", 1)
    batch_error(conn, [ok, item("gus", "CREDIT_ADD", "used", 11)], "LG005", 1)  # different amount
    batch_error(conn, [ok, ok, item("gus", "CREDIT_ADD", "held-key", 1)], "LG005", 2)
    # keys are per owner: another owner's "used" and "held-key" are new requests
    rows = batch(
        conn, [item("hal", "CREDIT_ADD", "used", 10), item("hal", "CREDIT_ADD", "held-key", 1)]
    )
    assert [r["replayed"] for r in rows] == [False, False]
    # keys are per app: another app may use the same key
    rows = batch(conn, [item("gus", "CONTENT_ACCESS", "used", app="example_app")])
    assert rows[0]["replayed"] is False


def test_running_balance_never_below_zero_or_held(conn):
    items = [
        item("ida", "CREDIT_ADD", "i1", 5),
        item("ida", "CREDIT_SPEND", "i2", 3),
        item("ida", "CREDIT_SPEND", "i3", 3),
    ]
    error = batch_error(conn, items, "LG001", 2)
    assert json.loads(error.diag.message_detail) == {
        "owner_id": "ida",
        "needed": 3,
        "available": 2,
        "index": 2,
    }
    # a credit later in the batch does not cover an earlier debit
    batch_error(
        conn, [item("ida", "CREDIT_SPEND", "i4", 1), item("ida", "CREDIT_ADD", "i5", 5)], "LG001", 0
    )
    # holds reduce what is available
    post(conn, "ida", "CREDIT_ADD", "fund", amount=10)
    one(
        conn,
        "create_hold",
        owner_id="ida",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="h",
        amount=8,
    )
    error = batch_error(
        conn,
        [item("ida", "CREDIT_SPEND", "i6", 1), item("ida", "CREDIT_SPEND", "i7", 2)],
        "LG001",
        1,
    )
    assert json.loads(error.diag.message_detail)["available"] == 1
    rows = batch(conn, [item("ida", "CREDIT_SPEND", "i8", 2)])
    assert rows[0]["balance"] == 8


def test_debit_for_an_unknown_owner_creates_no_account(conn):
    batch_error(
        conn,
        [item("jon", "CREDIT_ADD", "j1", 1), item("nobody", "CREDIT_SPEND", "j2", 1)],
        "LG001",
        1,
    )
    assert conn.execute("SELECT count(*) FROM ledger.accounts").fetchone()[0] == 0


def test_limits_count_earlier_items_and_entries(conn):
    error = batch_error(
        conn,
        [
            item("kim", "SIGNUP_CREDIT", "s1"),
            item("lee", "SIGNUP_CREDIT", "s2"),
            item("kim", "SIGNUP_CREDIT", "s3"),
        ],
        "LG004",
        2,
    )
    assert json.loads(error.diag.message_detail)["limit_per"] == "ever"
    batch_error(
        conn, [item("kim", "DAILY_REWARD", "d1"), item("kim", "DAILY_REWARD", "d2")], "LG004", 1
    )
    post(conn, "kim", "SIGNUP_CREDIT", "s0")
    batch_error(
        conn, [item("lee", "SIGNUP_CREDIT", "s4"), item("kim", "SIGNUP_CREDIT", "s5")], "LG004", 1
    )
    rows = batch(conn, [item("kim", "DAILY_REWARD", "d3"), item("lee", "SIGNUP_CREDIT", "s6")])
    assert [r["amount"] for r in rows] == [1, 3]


GOOD = item("mia", "CREDIT_ADD", "good-0", 5)

BAD_ITEMS = [
    ("unknown operation", item("mia", "NO_SUCH_OP", "x"), "LG002"),
    ("another app's operation", item("mia", "CONTENT_ACCESS", "x"), "LG003"),
    ("system operation", item("mia", "TRANSFER_OUT", "x", 1), "LG003"),
    ("unknown app", item("mia", "CREDIT_ADD", "x", 1, app="no_app"), "LG011"),
    (
        "missing app",
        {"owner_id": "mia", "operation": "CREDIT_ADD", "idempotency_key": "x"},
        "LG007",
    ),
    ("missing operation", {"owner_id": "mia", "app": "core", "idempotency_key": "x"}, "LG007"),
    ("zero amount", item("mia", "CREDIT_ADD", "x", 0), "LG006"),
    ("negative amount", item("mia", "CREDIT_ADD", "x", -5), "LG006"),
    ("fractional amount", item("mia", "CREDIT_ADD", "x", 1.5), "LG006"),
    ("amount above the operation's maximum", item("mia", "CREDIT_ADD", "x", 1_000_001), "LG006"),
    ("amount beyond bigint", item("mia", "CREDIT_ADD", "x", 10**30), "LG006"),
    ("fixed amount changed", item("mia", "SIGNUP_CREDIT", "x", 2), "LG006"),
    ("amount as a string", item("mia", "CREDIT_ADD", "x", "5"), "LG006"),
    ("amount as a boolean", item("mia", "CREDIT_ADD", "x", True), "LG006"),
    ("missing owner", {"app": "core", "operation": "CREDIT_ADD", "idempotency_key": "x"}, "LG007"),
    ("null owner", item(None, "CREDIT_ADD", "x"), "LG007"),  # type: ignore[arg-type]
    ("empty owner", item("", "CREDIT_ADD", "x"), "LG007"),
    ("owner too long", item("o" * 256, "CREDIT_ADD", "x"), "LG007"),
    ("owner as a number", item(42, "CREDIT_ADD", "x"), "LG007"),  # type: ignore[arg-type]
    ("missing key", {"owner_id": "mia", "app": "core", "operation": "CREDIT_ADD"}, "LG007"),
    ("empty key", item("mia", "CREDIT_ADD", ""), "LG007"),
    ("key too long", item("mia", "CREDIT_ADD", "k" * 256), "LG007"),
    ("metadata not an object", item("mia", "CREDIT_ADD", "x", metadata=[1]), "LG007"),
    ("metadata a number", item("mia", "CREDIT_ADD", "x", metadata=3), "LG007"),
    ("metadata text that is not JSON", item("mia", "CREDIT_ADD", "x", metadata="{oops"), "LG007"),
    ("metadata over 64 KiB", item("mia", "CREDIT_ADD", "x", metadata={"a": "x" * 70_000}), "LG007"),
    ("unknown key", item("mia", "CREDIT_ADD", "x", ttl=5), "LG007"),
    ("item not an object", ["mia", "CREDIT_ADD"], "LG007"),
    ("item null", None, "LG007"),
]


def test_every_invalid_item_is_named_and_nothing_is_written(conn):
    post(conn, "mia", "CREDIT_ADD", "fund", amount=100)
    for name, bad, sqlstate in BAD_ITEMS:
        try:
            batch_error(conn, [GOOD, bad, item("mia", "CREDIT_ADD", "good-2", 1)], sqlstate, 1)
        except AssertionError as exc:  # pragma: no cover - names the case
            raise AssertionError(f"{name}: {exc}") from exc
    error = batch_error(conn, [GOOD, item("mia", "CREDIT_ADD", "x", 1, colour="red")], "LG007", 1)
    assert json.loads(error.diag.message_detail)["field"] == "colour"
    assert balance(conn, "mia") == 100


def test_the_first_failing_item_is_reported(conn):
    # two invalid items: the lower index wins
    batch_error(
        conn, [GOOD, item("mia", "CREDIT_ADD", "a", 0), GOOD, item("mia", "NOPE", "b")], "LG006", 1
    )
    batch_error(
        conn, [GOOD, item("", "CREDIT_ADD", "a"), item("mia", "CREDIT_ADD", "b", 0)], "LG007", 1
    )
    # ledger-state errors: the lowest index, whatever the kind
    post(conn, "nia", "CREDIT_ADD", "taken", amount=1)
    batch_error(
        conn,
        [
            item("nia", "CREDIT_ADD", "n1", 1),
            item("nia", "CREDIT_SPEND", "n2", 5),
            item("nia", "CREDIT_ADD", "taken", 2),
        ],
        "LG001",
        1,
    )
    batch_error(
        conn,
        [item("nia", "CREDIT_ADD", "taken", 2), item("nia", "CREDIT_SPEND", "n2", 5)],
        "LG005",
        0,
    )


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ('{"owner_id": "x"}', "not an array"),
        ("[]", "empty"),
        ('"text"', "not an array"),
        ("[1, 2", "invalid json"),
        ("not json", "invalid json"),
        (None, "required"),
    ],
)
def test_the_batch_itself_must_be_a_non_empty_array(conn, entries, reason):
    error = batch_error(conn, entries, "LG007", None)
    assert json.loads(error.diag.message_detail)["reason"] == reason


def test_at_most_ten_thousand_items(conn):
    error = batch_error(conn, [GOOD] * 10_001, "LG007", None)
    assert json.loads(error.diag.message_detail) == {
        "field": "entries",
        "reason": "too many",
        "count": 10001,
        "max": 10000,
    }


def test_ten_thousand_items_in_one_call(conn):
    items = [item(f"bulk{i % 500}", "CREDIT_ADD", f"bulk-{i}", 1 + i % 7) for i in range(10_000)]
    rows = batch(conn, items)
    assert len(rows) == 10_000 and not any(r["replayed"] for r in rows)
    assert seqs_follow_input_order(conn, [r["entry_id"] for r in rows])
    total = conn.execute("SELECT sum(balance) FROM ledger.accounts").fetchone()[0]
    assert total == sum(1 + i % 7 for i in range(10_000))
    assert call(conn, "verify") == []


def test_text_the_database_cannot_store_is_lg007_with_the_index(conn):
    raw_item = (
        '{"owner_id": "oli", "app": "core", "operation": "CREDIT_ADD", "idempotency_key": "%s"%s}'
    )
    good = raw_item % ("u1", "")
    for bad, reason in (
        (raw_item % ("u2", ', "metadata": {"note": "a\\u0000b"}'), "not storable"),
        (raw_item % ("u2\\u0000", ""), "not storable"),
        (raw_item % ("u2", ', "metadata": {"n": 1e1000000}'), "number out of range"),
        (raw_item % ("u2", ', "metadata": {"n": "\\ud800"}'), "invalid unicode escape"),
    ):
        error = batch_error(conn, f"[{good}, {bad}]", "LG007", 1)
        assert json.loads(error.diag.message_detail)["reason"] == reason
        # Each reason is worded for itself: only \u0000 talks about \u0000.
        words = f"{error.diag.message_primary} {error.diag.message_hint}"
        assert ("\\u0000" in words) == (reason == "not storable"), words


@pytest.mark.parametrize(
    ("raw", "index", "key", "path"),
    [
        # the last "amount" would win in jsonb: 999 credited instead of the 1 a reader sees first
        (
            '[{"owner_id": "dup", "app": "core", "operation": "CREDIT_ADD",'
            ' "idempotency_key": "d1", "amount": 1, "amount": 999}]',
            0,
            "amount",
            "$",
        ),
        (
            '[{"owner_id": "dup", "app": "core", "operation": "CREDIT_ADD",'
            ' "idempotency_key": "d1", "amount": 1},'
            ' {"owner_id": "dup", "app": "core", "operation": "CREDIT_ADD",'
            ' "idempotency_key": "d2", "amount": 1,'
            ' "metadata": {"order": {"lines": [{"sku": "a", "sku": "b"}]}}}]',
            1,
            "sku",
            '$."metadata"."order"."lines"[0]',
        ),
        ('{"entries": [], "entries": []}', None, "entries", "$"),
    ],
)
def test_duplicate_json_keys_are_lg007_and_write_nothing(conn, raw, index, key, path):
    error = batch_error(conn, raw, "LG007", index)
    detail = json.loads(error.diag.message_detail)
    assert (detail["reason"], detail["key"], detail["path"]) == ("duplicate key", key, path)
    assert "duplicate key" in (error.diag.message_primary or "")


def spend(owner: str, amount: int) -> dict[str, Any]:
    return {"owner_id": owner, "app": "core", "operation": "CREDIT_SPEND", "amount": amount}


def keyed_batch(conn: psycopg.Connection[Any], items: Any, key: str | None) -> list[dict[str, Any]]:
    """post_entries with the request's idempotency key (text overload)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM ledger.post_entries(entries => %s, idempotency_key => %s)",
            (json.dumps(items), key),
        )
        return cur.fetchall()


def test_a_request_key_covers_the_whole_batch(conn):
    post(conn, "kim", "CREDIT_ADD", "fund-kim", amount=100)
    first = keyed_batch(conn, [spend("kim", 5)], "K")
    assert [(r["amount"], r["replayed"]) for r in first] == [(-5, False)]
    # An identical retry replays.
    again = keyed_batch(conn, [spend("kim", 5)], "K")
    assert [(r["entry_id"], r["replayed"]) for r in again] == [(first[0]["entry_id"], True)]
    # The same key with another batch names another request: LG005, nothing written
    # (the second item is not written on its own).
    before = counts(conn)
    # (Keys are per owner: K:0 of another owner, lou, would be lou's own request.)
    for other in ([spend("kim", 5), spend("kim", 7)], [spend("kim", 6)]):
        with pytest.raises(psycopg.Error) as info:
            keyed_batch(conn, other, "K")
        assert info.value.sqlstate == "LG005", str(info.value)
        assert json.loads(info.value.diag.message_detail)["index"] == 0
    assert counts(conn) == before
    assert balance(conn, "kim") == 95
    # Without a request key, an item without a key is refused as before.
    batch_error(conn, [spend("kim", 5)], "LG007", 0)


def test_an_item_with_its_own_key_keeps_the_per_item_rule(conn):
    post(conn, "kim", "CREDIT_ADD", "fund-kim", amount=100)
    rows = keyed_batch(conn, [spend("kim", 5), {**spend("kim", 7), "idempotency_key": "own"}], "R")
    keys = conn.execute(
        "SELECT idempotency_key FROM ledger.entries WHERE owner_id = 'kim' ORDER BY seq"
    ).fetchall()
    assert [k[0] for k in keys] == ["fund-kim", "R:0", "own"]
    # "own" is an ordinary key: the same item under it, alone, replays.
    alone = one(
        conn,
        "post_entry",
        owner_id="kim",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="own",
        amount=7,
    )
    assert alone["replayed"] is True and alone["entry_id"] == rows[1]["entry_id"]
    # The jsonb overload takes the request key too: the same request replays.
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM ledger.post_entries(entries => %s, idempotency_key => %s)",
            (Jsonb([spend("kim", 5), {**spend("kim", 7), "idempotency_key": "own"}]), "R"),
        )
        assert [r["replayed"] for r in cur.fetchall()] == [True, True]


def test_an_invalid_item_is_named_when_the_request_key_keys_the_others(conn):
    items = [spend("kim", 5), {**spend("kim", 5), "operation": "NO_SUCH_OP"}]
    before = counts(conn)
    with pytest.raises(psycopg.Error) as info:
        keyed_batch(conn, items, "E")
    assert info.value.sqlstate == "LG002"
    assert json.loads(info.value.diag.message_detail)["index"] == 1
    assert counts(conn) == before
    with pytest.raises(psycopg.Error) as empty:
        keyed_batch(conn, [spend("kim", 5)], "")
    assert empty.value.sqlstate == "LG007"


def test_a_credit_beyond_the_largest_balance_is_lg006(conn):
    conn.execute("SELECT ledger.define_app('big_app')")
    conn.execute(
        "SELECT ledger.define_operation('big_app', 'BIG_CREDIT', 'credit',"
        " caller_sets_amount => true)"
    )
    half = 5 * 10**18
    error = batch_error(
        conn,
        [
            item("pat", "BIG_CREDIT", "g1", half, app="big_app"),
            item("pat", "BIG_CREDIT", "g2", half, app="big_app"),
        ],
        "LG006",
        1,
    )
    assert json.loads(error.diag.message_detail)["reason"] == "balance overflow"


def test_roles(conn):
    """A service (a login member of ledger_app) posts batches, and created_by
    names it; a member of ledger_reader cannot."""
    service, reader = login_member(conn, "ledger_app"), login_member(conn, "ledger_reader")
    conn.execute(f"SET ROLE {service}")
    rows = batch(conn, [item("quinn", "CREDIT_ADD", "role-1", 2)])
    assert rows[0]["balance"] == 2
    batch(conn, [item("quinn", "CREDIT_ADD", "role-2", 2)], as_jsonb=True)
    assert conn.execute("SELECT DISTINCT created_by FROM ledger.entries").fetchall() == [(service,)]
    conn.execute(f"SET ROLE {reader}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        batch(conn, [item("quinn", "CREDIT_ADD", "role-3", 2)])
    conn.execute("RESET ROLE")
    assert balance(conn, "quinn") == 4


def _threads(db_url: str, work: Any, threads: int) -> list[Any]:
    barrier = threading.Barrier(threads)

    def runner(index: int) -> Any:
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute("SET lock_timeout = '20s'")
            barrier.wait()
            return work(c, index)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(runner, range(threads)))


@pytest.mark.parametrize("repeat", [1, 12])  # 6 items (key locks) and 72 (no key locks)
def test_concurrent_batches_on_the_same_owners_never_deadlock(db_url, conn, repeat):
    owners = [f"w{i}" for i in range(6)]
    batch(conn, [item(o, "CREDIT_ADD", f"fund-{o}", 1000) for o in owners])
    rounds = 10

    def work(c, index):
        for round_ in range(rounds):
            order = (owners if (index + round_) % 2 else owners[::-1]) * repeat
            items = [
                item(
                    o,
                    "CREDIT_SPEND" if (index + n) % 2 else "CREDIT_ADD",
                    f"t{index}-{round_}-{n}",
                    1,
                )
                for n, o in enumerate(order)
            ]
            batch(c, items)
        return True

    assert _threads(db_url, work, 4) == [True] * 4
    written = conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0]
    assert written == 6 + 4 * rounds * 6 * repeat
    assert call(conn, "verify") == []


def test_the_same_batch_at_once_is_written_once(db_url, conn):
    items = [item(f"v{i}", "CREDIT_ADD", f"once-{i}", 3) for i in range(20)]
    results = _threads(db_url, lambda c, index: batch(c, items), 4)
    assert len({tuple(r["entry_id"] for r in rows) for rows in results}) == 1
    assert sorted(all(r["replayed"] for r in rows) for rows in results) == [False, True, True, True]
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == 20
    assert call(conn, "verify") == []


def test_one_key_raced_by_several_owners_is_several_requests(db_url, conn):
    """A key belongs to its item's owner: four batches of four owners with one
    key are four requests (it used to be one winner and three LG005)."""

    def work(c, index):
        return batch(c, [item(f"racer{index}", "CREDIT_ADD", "contested", 1)])[0]["owner_id"]

    results = _threads(db_url, work, 4)
    assert sorted(results) == [f"racer{i}" for i in range(4)]
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == 4


def _while_uncommitted(db_url: str, first: list[dict[str, Any]], second: Any) -> Any:
    """Run `second` in another session while a batch of `first` is written but not committed."""
    with psycopg.connect(db_url) as holder:
        batch(holder, first)
        with ThreadPoolExecutor(1) as pool:
            with psycopg.connect(db_url, autocommit=True) as other:
                other.execute("SET lock_timeout = '20s'")
                future = pool.submit(second, other)
                # the second session waits on the first one's lock (the account row or the
                # key's index entry)
                # Up to 15 s (within the second session's lock_timeout): on a loaded
                # machine a Citus cluster can take seconds to reach the wait.
                for _ in range(300):
                    waiting = lock_waits(holder)
                    if waiting:
                        break
                    threading.Event().wait(0.05)
                assert waiting, "the second session never waited"
                holder.commit()
                return future.result()


# Batches of every size order their keys by the owners' account locks (the
# key locks that batches of up to 64 items took are gone): both sizes behave
# alike.
SMALL, LARGE = 2, 70


@pytest.mark.parametrize("size", [SMALL, LARGE])
def test_a_retry_waits_for_the_first_batch_and_replays(db_url, conn, size):
    items = [item(f"xena{i % 3}", "CREDIT_ADD", f"retry-{i}", 4) for i in range(size)]
    rows = _while_uncommitted(db_url, items, lambda c: batch(c, items))
    assert all(r["replayed"] for r in rows) and len(rows) == size
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == size


def test_a_key_committed_meanwhile_is_decided_under_the_owner_lock(db_url, conn):
    """A large batch whose last item reuses, with another amount, a key that a
    batch in flight writes for the same owner: it waits for that owner's lock,
    then sees the entry: LG005 naming the item (never a unique violation)."""
    filler = [item("zoe", "CREDIT_ADD", f"z-free-{i}", 1) for i in range(LARGE - 1)]

    def second(c):
        with pytest.raises(psycopg.Error) as info:
            batch(c, [*filler, item("yan", "CREDIT_ADD", "z-shared", 2)])
        return info.value

    error = _while_uncommitted(db_url, [item("yan", "CREDIT_ADD", "z-shared", 1)], second)
    assert error.sqlstate == "LG005"
    assert json.loads(error.diag.message_detail)["index"] == LARGE - 1
    assert conn.execute("SELECT owner_id FROM ledger.entries").fetchall() == [("yan",)]


def test_a_create_hold_racing_a_large_batch_cannot_reuse_its_key(db_url, conn):
    """The gap batches of more than 64 items left (they took no key locks, and
    entries and holds share no index): a create_hold with one of the batch's
    keys, sent while the batch is in flight, waits for the owner's lock and
    then sees the batch's entry: LG005, and no hold has the key."""
    post(conn, "hank", "CREDIT_ADD", "fund-hank", amount=100)
    items = [item("hank", "CREDIT_ADD", f"h-{i}", 1) for i in range(LARGE)]

    def second(c):
        with pytest.raises(psycopg.Error) as info:
            one(
                c,
                "create_hold",
                owner_id="hank",
                app="core",
                operation="CREDIT_SPEND",
                idempotency_key=f"h-{LARGE - 1}",
                amount=1,
            )
        return info.value

    error = _while_uncommitted(db_url, items, second)
    assert error.sqlstate == "LG005"
    assert conn.execute("SELECT count(*) FROM ledger.holds").fetchone() == (0,)
    # and the other way round: a hold in flight, a large batch reusing its key
    with psycopg.connect(db_url) as holder:
        one(
            holder,
            "create_hold",
            owner_id="hank",
            app="core",
            operation="CREDIT_SPEND",
            idempotency_key="h-hold",
            amount=1,
        )
        with ThreadPoolExecutor(1) as pool, psycopg.connect(db_url, autocommit=True) as other:
            late = [
                *[item("hank", "CREDIT_ADD", f"l-{i}", 1) for i in range(LARGE - 1)],
                item("hank", "CREDIT_ADD", "h-hold", 1),
            ]

            def late_batch() -> Any:
                with pytest.raises(psycopg.Error) as info:
                    batch(other, late)
                return info.value

            future = pool.submit(late_batch)
            threading.Event().wait(0.3)
            holder.commit()
            late_error = future.result()
    assert late_error.sqlstate == "LG005"
    assert json.loads(late_error.diag.message_detail)["index"] == LARGE - 1
    assert conn.execute(
        "SELECT count(*) FROM ledger.entries WHERE idempotency_key = 'h-hold'"
    ).fetchone() == (0,)
    assert call(conn, "verify") == []


def test_a_small_batch_and_a_single_call_of_one_request_replay_each_other(db_url, conn):
    single = {
        "owner_id": "ali",
        "app": "core",
        "operation": "CREDIT_ADD",
        "idempotency_key": "one-request",
        "amount": 6,
    }
    as_item = item("ali", "CREDIT_ADD", "one-request", 6)
    # the batch is in flight: the single call waits for it and replays its entry
    entry = _while_uncommitted(
        db_url,
        [as_item],
        lambda c: one(c, "post_entry", **single),
    )
    assert entry["replayed"] is True
    # and the other way round
    with psycopg.connect(db_url) as holder:
        first = post(holder, "ali", "CREDIT_ADD", "two-request", amount=2)
        with ThreadPoolExecutor(1) as pool, psycopg.connect(db_url, autocommit=True) as other:
            future = pool.submit(batch, other, [item("ali", "CREDIT_ADD", "two-request", 2)])
            threading.Event().wait(0.3)
            holder.commit()
            assert future.result() == [{**first, "replayed": True}]
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == 2
