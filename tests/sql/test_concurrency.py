"""Real threads, committed data: the row lock keeps balances exact."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg

from .helpers import balance, call, post

THREADS = 8


def _run_threads(db_url, work, threads=THREADS):
    """Run work(conn, thread_index) in threads that start together; collect results."""
    barrier = threading.Barrier(threads)

    def runner(index):
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")
            barrier.wait()
            return work(conn, index)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(runner, range(threads)))


def _outcome(fn):
    try:
        return fn()
    except psycopg.Error as exc:
        return exc.sqlstate


def test_concurrent_debits_never_overdraw(db_url, conn):
    post(conn, "hot", "CREDIT_ADD", "fund", amount=500)

    def work(c, index):
        results = Counter()
        for i in range(200):
            key = f"t{index}-{i}"
            outcome = _outcome(lambda key=key: post(c, "hot", "CREDIT_SPEND", key, amount=1))
            results["ok" if isinstance(outcome, dict) else outcome] += 1
        return results

    total = sum(_run_threads(db_url, work), Counter())
    assert total == Counter({"ok": 500, "LG001": THREADS * 200 - 500})
    assert balance(conn, "hot") == 0
    assert (
        conn.execute("SELECT sum(amount) FROM ledger.entries WHERE owner_id = 'hot'").fetchone()[0]
        == 0
    )
    assert call(conn, "verify") == []


def test_same_key_at_once_writes_one_entry(db_url, conn):
    def work(c, index):
        return post(c, "racer", "CREDIT_ADD", "one-key", amount=9)

    results = _run_threads(db_url, work)
    assert len({r["entry_id"] for r in results}) == 1
    assert sorted(r["replayed"] for r in results) == [False] + [True] * (THREADS - 1)
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == 1
    assert balance(conn, "racer") == 9


def test_same_key_different_owners_at_once_are_different_requests(db_url, conn):
    """A key belongs to (owner, app): the same key sent for eight owners at once
    is eight requests, eight entries (it used to be one winner and LG005s)."""

    def work(c, index):
        return _outcome(lambda: post(c, f"owner{index}", "CREDIT_ADD", "contested", amount=1))

    results = _run_threads(db_url, work)
    assert all(isinstance(r, dict) and r["replayed"] is False for r in results), results
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == THREADS
    assert call(conn, "verify") == []


def test_seq_is_contiguous_per_owner_under_concurrent_writers(db_url, conn):
    """Eight writers on two owners at once (credits, debits, holds captured,
    transfers between them): each owner's entries are numbered 1..n without a
    gap or a repeat, in the order of the running balance, and created_at
    never goes back along seq."""
    post(conn, "seq-a", "CREDIT_ADD", "fund-a", amount=1000)
    post(conn, "seq-b", "CREDIT_ADD", "fund-b", amount=1000)

    def work(c, index):
        me, other = ("seq-a", "seq-b") if index % 2 else ("seq-b", "seq-a")
        for n in range(15):
            key = f"w{index}-{n}"
            kind = n % 3
            if kind == 0:
                post(c, me, "CREDIT_ADD", key, amount=2)
            elif kind == 1:
                post(c, me, "CREDIT_SPEND", key, amount=1)
            else:
                c.execute("SELECT * FROM ledger.transfer(%s, %s, 1, 'core', %s)", (me, other, key))
        return index

    _run_threads(db_url, work)
    for owner in ("seq-a", "seq-b"):
        rows = conn.execute(
            "SELECT seq, amount, balance, created_at FROM ledger.entries WHERE owner_id = %s"
            " ORDER BY seq",
            (owner,),
        ).fetchall()
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        running = 0
        for _, amount, after, _ in rows:
            running += amount
            assert after == running
        assert all(a[3] <= b[3] for a, b in itertools.pairwise(rows))
        last = conn.execute(
            "SELECT last_seq FROM ledger.accounts WHERE owner_id = %s", (owner,)
        ).fetchone()
        assert last == (len(rows),)
    assert call(conn, "verify") == []


def test_daily_reward_race_one_claim_wins(db_url, conn):
    def work(c, index):
        return _outcome(lambda: post(c, "early-bird", "DAILY_REWARD", f"claim-{index}"))

    results = _run_threads(db_url, work, threads=2)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert [r for r in results if not isinstance(r, dict)] == ["LG004"]
    assert balance(conn, "early-bird") == 1


def test_signup_race_one_claim_wins_for_a_new_owner(db_url, conn):
    def work(c, index):
        return _outcome(lambda: post(c, "newcomer", "SIGNUP_CREDIT", f"signup-{index}"))

    results = _run_threads(db_url, work)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert balance(conn, "newcomer") == 3
    assert call(conn, "verify") == []
