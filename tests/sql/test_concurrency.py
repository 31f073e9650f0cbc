"""Real threads, committed data: the row lock keeps balances exact."""

from __future__ import annotations

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


def test_same_key_different_owners_at_once_one_wins(db_url, conn):
    def work(c, index):
        return _outcome(lambda: post(c, f"owner{index}", "CREDIT_ADD", "contested", amount=1))

    results = _run_threads(db_url, work)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert sorted(r for r in results if not isinstance(r, dict)) == ["LG005"] * (THREADS - 1)
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone()[0] == 1


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
