"""Owner scope: keys per (owner, app), each owner's order (seq), and the
trailing owner_id of the functions that take an id alone."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from .helpers import balance, call, counts, one, post


def fails(conn: psycopg.Connection[Any], sqlstate: str, function: str, **params: Any) -> None:
    before = counts(conn)
    with pytest.raises(psycopg.Error) as err:
        call(conn, function, **params)
    assert err.value.sqlstate == sqlstate, str(err.value)
    assert counts(conn) == before


def hold(conn: psycopg.Connection[Any], owner: str, key: str, amount: int) -> dict[str, Any]:
    return one(
        conn,
        "create_hold",
        owner_id=owner,
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key=key,
        amount=amount,
    )


def transfer(conn: psycopg.Connection[Any], sender: str, receiver: str, amount: int, key: str):
    return one(
        conn,
        "transfer",
        from_owner=sender,
        to_owner=receiver,
        amount=amount,
        app="core",
        idempotency_key=key,
    )


# ---- keys per (owner, app) ---------------------------------------------------------------------


def test_the_same_key_for_two_owners_is_two_entries(conn):
    ann = post(conn, "ann", "CREDIT_ADD", "k", amount=5)
    bob = post(conn, "bob", "CREDIT_ADD", "k", amount=5)
    assert (ann["replayed"], bob["replayed"]) == (False, False)
    assert ann["entry_id"] != bob["entry_id"]
    # each owner's key still replays, and still conflicts with another request
    assert post(conn, "bob", "CREDIT_ADD", "k", amount=5)["entry_id"] == bob["entry_id"]
    with pytest.raises(psycopg.Error) as err:
        post(conn, "ann", "CREDIT_ADD", "k", amount=6)
    assert err.value.sqlstate == "LG005"
    # holds too: the key of ann's entry is free for a hold of bob, not of ann
    assert hold(conn, "bob", "h", 1)["replayed"] is False
    assert hold(conn, "ann", "h", 1)["replayed"] is False
    fails(
        conn,
        "LG005",
        "create_hold",
        owner_id="ann",
        app="core",
        operation="CREDIT_SPEND",
        idempotency_key="k",
        amount=1,
    )
    assert (balance(conn, "ann"), balance(conn, "bob")) == (5, 5)
    assert call(conn, "verify") == []


def test_a_transfer_key_belongs_to_the_sender(conn):
    post(conn, "ann", "CREDIT_ADD", "fund", amount=20)
    post(conn, "cy", "CREDIT_ADD", "fund", amount=20)
    first = transfer(conn, "ann", "bob", 3, "gift")
    # the same request replays; another request under the sender's key is LG005
    again = transfer(conn, "ann", "bob", 3, "gift")
    assert (again["transfer_id"], again["replayed"]) == (first["transfer_id"], True)
    fails(
        conn,
        "LG005",
        "transfer",
        from_owner="ann",
        to_owner="bob",
        amount=4,
        app="core",
        idempotency_key="gift",
    )
    fails(
        conn,
        "LG005",
        "post_entry",
        owner_id="ann",
        app="core",
        operation="CREDIT_ADD",
        idempotency_key="gift",
        amount=1,
    )
    # the receiving leg carries no key: the receiver's "gift" is free
    assert post(conn, "bob", "CREDIT_ADD", "gift", amount=1)["replayed"] is False
    # another sender's "gift" is another transfer
    other = transfer(conn, "cy", "bob", 3, "gift")
    assert other["replayed"] is False and other["transfer_id"] != first["transfer_id"]
    legs = conn.execute(
        "SELECT owner_id, idempotency_key FROM ledger.entries WHERE transfer_id = %s ORDER BY amount",
        (first["transfer_id"],),
    ).fetchall()
    assert legs == [("ann", "gift"), ("bob", None)]
    assert call(conn, "verify") == []


def test_a_reversal_key_belongs_to_the_owner_of_the_entry(conn):
    a = post(conn, "ann", "CREDIT_ADD", "a", amount=5)
    b = post(conn, "bob", "CREDIT_ADD", "b", amount=5)
    ra = one(conn, "reverse_entry", entry_id=a["entry_id"], app="core", idempotency_key="undo")
    # the same key reverses bob's entry: another owner, another request
    rb = one(conn, "reverse_entry", entry_id=b["entry_id"], app="core", idempotency_key="undo")
    assert (ra["owner_id"], rb["owner_id"]) == ("ann", "bob")
    assert (ra["replayed"], rb["replayed"]) == (False, False)
    again = one(conn, "reverse_entry", entry_id=a["entry_id"], app="core", idempotency_key="undo")
    assert (again["entry_id"], again["replayed"]) == (ra["entry_id"], True)
    # a transfer's reversal: the key is the original sender's
    post(conn, "cy", "CREDIT_ADD", "c", amount=5)
    t = transfer(conn, "cy", "ann", 2, "t")
    rows = call(conn, "reverse_entry", entry_id=t["to_entry_id"], app="core", idempotency_key="rt")
    assert [r["owner_id"] for r in rows] == ["cy", "ann"]
    keyed = conn.execute(
        "SELECT owner_id FROM ledger.entries WHERE idempotency_key = 'rt'"
    ).fetchall()
    assert keyed == [("cy",)]
    replay = call(
        conn, "reverse_entry", entry_id=t["to_entry_id"], app="core", idempotency_key="rt"
    )
    assert [(r["entry_id"], r["replayed"]) for r in replay] == [(r["entry_id"], True) for r in rows]
    # ann may use "rt" for a request of her own
    assert post(conn, "ann", "CREDIT_ADD", "rt", amount=1)["replayed"] is False
    assert call(conn, "verify") == []


# ---- order per owner ----------------------------------------------------------------------------


def _restart_ids(conn: psycopg.Connection[Any], at: int) -> None:
    """Entry ids that do not follow time (as on a cluster, where each node
    hands out its own range): the identity restarts elsewhere."""
    conn.execute("SET ROLE ledger_schema_owner")
    conn.execute(f"ALTER TABLE ledger.entries ALTER COLUMN entry_id RESTART WITH {at}")
    conn.execute("RESET ROLE")


def test_history_pages_and_balances_follow_seq_not_ids(conn):
    written = []
    for start, n in ((None, 3), (500, 2), (100, 2)):
        if start is not None:
            _restart_ids(conn, start)
        for _ in range(n):
            written.append(post(conn, "ann", "CREDIT_ADD", f"k{len(written)}", amount=1))
    ids = [w["entry_id"] for w in written]
    assert ids[3:] == [500, 501, 100, 101]
    seqs = conn.execute(
        "SELECT entry_id, seq FROM ledger.entries WHERE owner_id = 'ann' ORDER BY seq"
    ).fetchall()
    assert seqs == [(entry_id, n) for n, entry_id in enumerate(ids, start=1)]
    # newest first by seq, three at a time, each page after the last entry_id of the previous
    pages, after = [], None
    while True:
        page = call(conn, "list_entries", owner_id="ann", after_id=after, max_rows=3)
        if not page:
            break
        pages.append([r["entry_id"] for r in page])
        after = page[-1]["entry_id"]
    assert pages == [[101, 100, 501], [500, ids[2], ids[1]], [ids[0]]]
    assert [r["seq"] for r in call(conn, "list_entries", owner_id="ann")] == list(range(7, 0, -1))
    # the running balance follows seq; balance_at takes the last entry by seq
    assert [r["balance"] for r in call(conn, "list_entries", owner_id="ann")] == list(
        range(7, 0, -1)
    )
    at = conn.execute("SELECT max(created_at) FROM ledger.entries").fetchone()[0]
    assert one(conn, "balance_at", owner_id="ann", at=at)["balance_at"] == 7
    # after_id is an entry of that owner
    post(conn, "bob", "CREDIT_ADD", "b", amount=1)
    bob_entry = call(conn, "list_entries", owner_id="bob")[0]["entry_id"]
    fails(conn, "LG008", "list_entries", owner_id="ann", after_id=bob_entry)
    assert call(conn, "verify") == []


def test_a_batch_numbers_each_owners_items_in_input_order(conn):
    post(conn, "ann", "CREDIT_ADD", "first", amount=1)
    items = [
        {"owner_id": o, "app": "core", "operation": "CREDIT_ADD", "idempotency_key": k, "amount": 1}
        for o, k in (("bob", "1"), ("ann", "2"), ("bob", "3"), ("ann", "4"))
    ]

    rows = call(conn, "post_entries", entries=json.dumps(items))
    seqs = conn.execute(
        "SELECT owner_id, seq FROM ledger.entries WHERE entry_id = ANY(%s) ORDER BY entry_id",
        ([r["entry_id"] for r in rows],),
    ).fetchall()
    assert seqs == [("bob", 1), ("ann", 2), ("bob", 2), ("ann", 3)]
    assert call(conn, "verify") == []


def test_verify_reports_a_gap_in_seq(conn):
    post(conn, "ann", "CREDIT_ADD", "a", amount=1)
    conn.execute("SET ROLE ledger_schema_owner")
    conn.execute("UPDATE ledger.accounts SET last_seq = 5 WHERE owner_id = 'ann'")
    conn.execute("RESET ROLE")
    rows = call(conn, "verify")
    assert [(r["check_name"], r["owner_id"]) for r in rows] == [("seq_contiguous", "ann")]


# ---- the trailing owner_id of the functions that take an id alone --------------------------------


def test_owner_id_given_or_null_both_work_and_a_wrong_owner_is_not_found(conn):
    post(conn, "ann", "CREDIT_ADD", "fund", amount=50)
    post(conn, "bob", "CREDIT_ADD", "fund", amount=50)
    entry = post(conn, "ann", "CREDIT_ADD", "e", amount=1)
    # get_entry
    assert one(conn, "get_entry", entry_id=entry["entry_id"])["owner_id"] == "ann"
    assert one(conn, "get_entry", entry_id=entry["entry_id"], owner_id="ann")["seq"] == 2
    fails(conn, "LG008", "get_entry", entry_id=entry["entry_id"], owner_id="bob")
    # get_hold, capture_hold, release_hold
    h1, h2 = hold(conn, "ann", "h1", 5), hold(conn, "ann", "h2", 5)
    assert one(conn, "get_hold", hold_id=h1["hold_id"])["owner_id"] == "ann"
    assert one(conn, "get_hold", hold_id=h1["hold_id"], owner_id="ann")["status"] == "active"
    fails(conn, "LG008", "get_hold", hold_id=h1["hold_id"], owner_id="bob")
    fails(conn, "LG008", "capture_hold", hold_id=h1["hold_id"], app="core", owner_id="bob")
    fails(conn, "LG008", "release_hold", hold_id=h1["hold_id"], app="core", owner_id="bob")
    captured = one(conn, "capture_hold", hold_id=h1["hold_id"], app="core", owner_id="ann")
    assert captured["amount"] == -5
    again = one(conn, "capture_hold", hold_id=h1["hold_id"], app="core")
    assert (again["entry_id"], again["replayed"]) == (captured["entry_id"], True)
    assert one(conn, "release_hold", hold_id=h2["hold_id"], app="core")["status"] == "released"
    replay = one(conn, "release_hold", hold_id=h2["hold_id"], app="core", owner_id="ann")
    assert replay["replayed"] is True
    # reverse_entry
    fails(
        conn,
        "LG008",
        "reverse_entry",
        entry_id=entry["entry_id"],
        app="core",
        idempotency_key="r",
        owner_id="bob",
    )
    rows = call(
        conn,
        "reverse_entry",
        entry_id=entry["entry_id"],
        app="core",
        idempotency_key="r",
        owner_id="ann",
    )
    assert [(r["owner_id"], r["amount"]) for r in rows] == [("ann", -1)]
    again_rows = call(
        conn, "reverse_entry", entry_id=entry["entry_id"], app="core", idempotency_key="r"
    )
    assert [r["replayed"] for r in again_rows] == [True]
    assert call(conn, "verify") == []
