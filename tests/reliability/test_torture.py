"""Torture: many threads run a random mix of every writing function against a
few hot owners for a bounded time; afterwards the invariants hold and every
write a thread saw succeed is in the tables, and nothing else is.

Per thread, counted by what the functions returned (replays count nothing):
entries per operation, holds created/captured/released. Allowed refusals are
the business errors a random mix provokes (LG001 insufficient credits, LG010
already reversed); any other error (a deadlock, a unique violation, a lock
timeout, a PostgreSQL error) fails the test.

Credit grants join the mix: promotional credits that expire within a
second or two while the others spend (their EXPIRE entries written by the
owners' next writes and by expire_grants, which one action runs), grants
with a priority, and voids. EXPIRE entries are the ledger's own, so they
are checked against the grants they closed rather than counted per thread.

Default 20 s (LEDGER_TORTURE_SECONDS overrides); the slow variant runs 120 s
(pytest --run-slow).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg.rows import dict_row

from .invariants import entries_by_operation, ledger_problems

THREADS = 16
HOT_OWNERS = [f"hot-{i}" for i in range(4)]
# LG009: a short hold expired first; LG014: a grant spent or expired before its void
ALLOWED = {"LG001", "LG009", "LG010", "LG014"}
SHARED_KEYS = 300  # keys every thread may use, each always for the same request
REPORT: dict[str, Any] = {}


class Worker:
    def __init__(self, url: str, index: int, deadline: float, batches: bool) -> None:
        self.url, self.index, self.deadline, self.batches = url, index, deadline, batches
        self.rng = random.Random(1000 + index)
        self.written: Counter[str] = Counter()  # entries per operation
        self.holds: Counter[str] = Counter()  # created, captured, released
        self.calls: Counter[str] = Counter()  # action -> ok / refused
        self.errors: list[str] = []
        self.my_holds: list[int] = []
        self.my_grants: list[tuple[str, int]] = []  # (owner, entry_id) of grants to void
        self.my_entries: list[int] = []
        self.replayable: list[tuple[str, dict[str, Any], int]] = []
        self.seq = 0

    def key(self) -> str:
        self.seq += 1
        return f"w{self.index}-{self.seq}"

    def one(self, cur: psycopg.Cursor[Any], query: str, params: dict[str, Any]) -> dict[str, Any]:
        cur.execute(query, params)
        row = cur.fetchone()
        assert row is not None
        return dict(row)

    def entry(self, row: dict[str, Any]) -> None:
        assert row["balance"] >= 0, row
        if not row["replayed"]:
            self.written[row["operation"]] += 1
            if row["operation"] != "REVERSAL":
                self.my_entries.append(row["entry_id"])

    # ---- actions --------------------------------------------------------------------------

    def post(self, cur: psycopg.Cursor[Any]) -> None:
        credit = self.rng.random() < 0.5
        params = {
            "owner_id": self.rng.choice(HOT_OWNERS),
            "operation": "CREDIT_ADD" if credit else "CREDIT_SPEND",
            "key": self.key(),
            "amount": self.rng.randint(1, 100 if credit else 150),
        }
        row = self.one(cur, POST, params)
        assert not row["replayed"]
        self.entry(row)
        self.replayable.append((POST, params, row["entry_id"]))

    def replay(self, cur: psycopg.Cursor[Any]) -> None:
        if not self.replayable:
            return self.post(cur)
        query, params, entry_id = self.rng.choice(self.replayable)
        row = self.one(cur, query, params)
        assert row["replayed"] and row["entry_id"] == entry_id, (params, row)

    def shared(self, cur: psycopg.Cursor[Any]) -> None:
        n = self.rng.randrange(SHARED_KEYS)
        params = {
            "owner_id": HOT_OWNERS[n % len(HOT_OWNERS)],
            "operation": "CREDIT_ADD",
            "key": f"shared-{n}",
            "amount": n % 50 + 1,
        }
        if not self.batches or self.rng.random() < 0.5:
            self.entry(self.one(cur, POST, params))
            return
        # The same request as an item of a batch: a batch item and a
        # post_entry call with one key replay each other, also concurrently.
        items = [
            {
                "owner_id": params["owner_id"],
                "app": "core",
                "operation": "CREDIT_ADD",
                "idempotency_key": params["key"],
                "amount": params["amount"],
            }
        ]
        if self.rng.random() < 0.5:
            items.append(
                {
                    "owner_id": self.rng.choice(HOT_OWNERS),
                    "app": "core",
                    "operation": "CREDIT_ADD",
                    "idempotency_key": self.key(),
                    "amount": 1,
                }
            )
        cur.execute(BATCH, {"entries": json.dumps(items)})
        for row in cur.fetchall():
            self.entry(row)

    def hold(self, cur: psycopg.Cursor[Any], ttl: str = "1 hour") -> None:
        row = self.one(
            cur,
            HOLD,
            {
                "owner_id": self.rng.choice(HOT_OWNERS),
                "key": self.key(),
                "amount": self.rng.randint(1, 120),
                "ttl": ttl,
            },
        )
        assert row["status"] == "active" and not row["replayed"]
        self.holds["created"] += 1
        self.my_holds.append(row["hold_id"])

    def short_hold(self, cur: psycopg.Cursor[Any]) -> None:
        """A hold that expires by the clock while the others work (1 or 2 s)."""
        self.hold(cur, ttl=self.rng.choice(["1 second", "2 seconds"]))

    def capture(self, cur: psycopg.Cursor[Any]) -> None:
        if not self.my_holds:
            return self.hold(cur)
        hold_id = self.my_holds.pop(self.rng.randrange(len(self.my_holds)))
        partial = self.rng.random() < 0.5
        row = self.one(cur, CAPTURE, {"hold_id": hold_id, "amount": 1 if partial else None})
        assert not row["replayed"]
        self.entry(row)
        self.holds["captured"] += 1
        # The same capture again is a replay of the same entry.
        again = self.one(cur, CAPTURE, {"hold_id": hold_id, "amount": 1 if partial else None})
        assert again["replayed"] and again["entry_id"] == row["entry_id"]

    def release(self, cur: psycopg.Cursor[Any]) -> None:
        if not self.my_holds:
            return self.hold(cur)
        hold_id = self.my_holds.pop(self.rng.randrange(len(self.my_holds)))
        row = self.one(cur, RELEASE, {"hold_id": hold_id})
        assert row["status"] == "released" and not row["replayed"]
        self.holds["released"] += 1

    def transfer(self, cur: psycopg.Cursor[Any]) -> None:
        source, target = self.rng.sample(HOT_OWNERS, 2)
        row = self.one(
            cur,
            TRANSFER,
            {
                "from_owner": source,
                "to_owner": target,
                "amount": self.rng.randint(1, 150),
                "key": self.key(),
            },
        )
        assert not row["replayed"] and row["from_balance"] >= 0 and row["to_balance"] >= 0
        self.written["TRANSFER_OUT"] += 1
        self.written["TRANSFER_IN"] += 1
        self.my_entries.append(row["from_entry_id"])

    def reverse(self, cur: psycopg.Cursor[Any]) -> None:
        if not self.my_entries:
            return self.post(cur)
        entry_id = self.my_entries.pop(self.rng.randrange(len(self.my_entries)))
        cur.execute(REVERSE, {"entry_id": entry_id, "key": self.key()})
        for row in cur.fetchall():
            assert not row["replayed"] and row["balance"] >= 0
            self.written["REVERSAL"] += 1

    def batch(self, cur: psycopg.Cursor[Any]) -> None:
        if not self.batches:
            return self.post(cur)
        items = []
        for _ in range(self.rng.randint(2, 6)):
            credit = self.rng.random() < 0.6
            items.append(
                {
                    "owner_id": self.rng.choice(HOT_OWNERS),
                    "app": "core",
                    "operation": "CREDIT_ADD" if credit else "CREDIT_SPEND",
                    "idempotency_key": self.key(),
                    "amount": self.rng.randint(1, 40 if credit else 80),
                }
            )
        cur.execute(BATCH, {"entries": json.dumps(items)})
        rows = cur.fetchall()
        assert len(rows) == len(items)
        for row in rows:
            assert not row["replayed"]
            self.entry(row)

    def expiring(self, cur: psycopg.Cursor[Any]) -> None:
        """Credits that expire within a second or two, spent first (priority)."""
        owner = self.rng.choice(HOT_OWNERS)
        row = self.one(
            cur,
            GRANT,
            {
                "owner_id": owner,
                "key": self.key(),
                "amount": self.rng.randint(1, 80),
                "seconds": self.rng.choice([1, 2]),
                "priority": self.rng.choice([None, 0, 10, 90]),
            },
        )
        assert not row["replayed"]
        self.entry(row)
        self.my_grants.append((owner, row["entry_id"]))

    def void(self, cur: psycopg.Cursor[Any]) -> None:
        if not self.my_grants:
            return self.expiring(cur)
        owner, entry_id = self.my_grants.pop(self.rng.randrange(len(self.my_grants)))
        found = self.one(
            cur,
            "SELECT grant_id FROM ledger.grants WHERE owner_id = %(owner)s AND entry_id = %(entry)s",
            {"owner": owner, "entry": entry_id},
        )
        row = self.one(cur, VOID, {"grant_id": found["grant_id"], "key": self.key()})
        assert not row["replayed"] and row["amount"] < 0
        self.entry(row)

    def sweep(self, cur: psycopg.Cursor[Any]) -> None:
        cur.execute("SELECT ledger.expire_grants(max_rows => 50)")

    def read(self, cur: psycopg.Cursor[Any]) -> None:
        row = self.one(
            cur,
            "SELECT * FROM ledger.get_balance(%(owner_id)s)",
            {"owner_id": self.rng.choice(HOT_OWNERS)},
        )
        assert row["balance"] >= 0 and 0 <= row["available"] <= row["balance"], row

    ACTIONS: ClassVar[dict[str, int]] = {
        "post": 6,
        "replay": 1,
        "shared": 1,
        "hold": 3,
        "short_hold": 1,
        "capture": 2,
        "release": 1,
        "transfer": 3,
        "reverse": 2,
        "batch": 2,
        "read": 2,
        "expiring": 2,
        "void": 1,
        "sweep": 1,
    }

    def run(self, start: threading.Barrier) -> None:
        names = list(self.ACTIONS)
        weights = list(self.ACTIONS.values())
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("SET lock_timeout = '30s'")
                with conn.cursor(row_factory=dict_row) as cur:
                    start.wait()
                    while time.monotonic() < self.deadline:
                        action = self.rng.choices(names, weights)[0]
                        try:
                            getattr(self, action)(cur)
                            self.calls[f"{action} ok"] += 1
                        except psycopg.Error as exc:
                            if exc.sqlstate not in ALLOWED:
                                self.errors.append(f"{action}: {exc.sqlstate} {exc}")
                                if len(self.errors) > 20:
                                    return
                            self.calls[f"{action} {exc.sqlstate}"] += 1
        except BaseException as exc:  # an assertion in a thread must reach the test
            self.errors.append(f"{type(exc).__name__}: {exc}")


POST = (
    "SELECT * FROM ledger.post_entry(owner_id => %(owner_id)s, app => 'core',"
    " operation => %(operation)s, idempotency_key => %(key)s, amount => %(amount)s)"
)
HOLD = (
    "SELECT * FROM ledger.create_hold(owner_id => %(owner_id)s, app => 'core',"
    " operation => 'CREDIT_SPEND', idempotency_key => %(key)s, amount => %(amount)s,"
    " ttl => %(ttl)s::interval)"
)
CAPTURE = (
    "SELECT * FROM ledger.capture_hold(hold_id => %(hold_id)s, app => 'core', amount => %(amount)s)"
)
RELEASE = "SELECT * FROM ledger.release_hold(hold_id => %(hold_id)s, app => 'core')"
TRANSFER = (
    "SELECT * FROM ledger.transfer(from_owner => %(from_owner)s, to_owner => %(to_owner)s,"
    " amount => %(amount)s, app => 'core', idempotency_key => %(key)s)"
)
REVERSE = (
    "SELECT * FROM ledger.reverse_entry(entry_id => %(entry_id)s, app => 'core',"
    " idempotency_key => %(key)s, reason => 'torture')"
)
BATCH = "SELECT * FROM ledger.post_entries(entries => %(entries)s::text)"
GRANT = (
    "SELECT * FROM ledger.grant_credits(owner_id => %(owner_id)s, app => 'core',"
    " operation => 'PROMO_CREDIT', idempotency_key => %(key)s, amount => %(amount)s,"
    " expires_at => clock_timestamp() + %(seconds)s * interval '1 second', priority => %(priority)s)"
)
VOID = (
    "SELECT * FROM ledger.void_grant(grant_id => %(grant_id)s, app => 'core',"
    " idempotency_key => %(key)s, reason => 'torture')"
)


def _torture(db_url: str, seconds: float) -> dict[str, Any]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        batches = conn.execute(
            "SELECT to_regprocedure('ledger.post_entries(text, text)') IS NOT NULL"
        ).fetchone()
        for owner in HOT_OWNERS:  # a starting balance, so debits succeed from the start
            conn.execute(
                POST,
                {
                    "owner_id": owner,
                    "operation": "CREDIT_ADD",
                    "key": f"seed-{owner}",
                    "amount": 500,
                },
            )
    assert batches is not None
    start = threading.Barrier(THREADS)
    deadline = time.monotonic() + seconds
    workers = [Worker(db_url, i, deadline, bool(batches[0])) for i in range(THREADS)]
    threads = [threading.Thread(target=w.run, args=(start,)) for w in workers]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
        assert not thread.is_alive(), "a torture thread hung"
    elapsed = time.monotonic() - began

    time.sleep(2.2)  # let every short hold and grant expire: the checks below read a still clock
    errors = [e for w in workers for e in w.errors]
    assert errors == [], errors[:10]
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Readers already leave expired credits out; the sweep writes their entries.
        seen = {
            owner: conn.execute("SELECT balance FROM ledger.get_balance(%s)", (owner,)).fetchone()[
                0
            ]  # type: ignore[index]
            for owner in HOT_OWNERS
        }
        while conn.execute("SELECT ledger.expire_grants(max_rows => 1000)").fetchone()[0]:  # type: ignore[index]
            pass
        stored = dict(conn.execute("SELECT owner_id, balance FROM ledger.accounts").fetchall())
        assert {owner: stored[owner] for owner in HOT_OWNERS} == seen
    written = sum((w.written for w in workers), Counter())
    written["CREDIT_ADD"] += len(HOT_OWNERS)  # the seeds
    holds = sum((w.holds for w in workers), Counter())
    calls = sum((w.calls for w in workers), Counter())

    with psycopg.connect(db_url, autocommit=True) as conn:
        assert ledger_problems(conn) == []
        in_table = entries_by_operation(conn)
        expired = in_table.pop("EXPIRE", 0)
        # A reversal giving credits back to a voided grant voids them again at
        # once: a VOID entry of the ledger's own, without a key.
        revoided = conn.execute(
            "SELECT count(*) FROM ledger.entries WHERE operation = 'VOID' AND idempotency_key IS NULL"
        ).fetchone()[0]  # type: ignore[index]
        if revoided:
            in_table["VOID"] -= revoided
        assert in_table == {k: v for k, v in written.items() if v}, (in_table, dict(written))
        # Every EXPIRE entry closed what one grant had left (or what a reversal
        # gave back to a grant already closed), and every expired grant has one.
        assert conn.execute(
            "SELECT count(*) FROM ledger.entries e JOIN ledger.grant_spending s"
            " ON s.owner_id = e.owner_id AND s.entry_id = e.entry_id WHERE e.operation = 'EXPIRE'"
        ).fetchone() == (expired,)
        assert conn.execute(
            "SELECT count(*) FROM ledger.grants g WHERE g.status = 'expired' AND NOT EXISTS"
            " (SELECT 1 FROM ledger.grant_spending s JOIN ledger.entries e"
            "  ON e.owner_id = s.owner_id AND e.entry_id = s.entry_id"
            "  WHERE s.owner_id = g.owner_id AND s.grant_id = g.grant_id AND e.operation = 'EXPIRE')"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM ledger.grants WHERE status = 'active' AND remaining > 0"
            " AND expires_at <= clock_timestamp()"
        ).fetchone() == (0,)
        hold_rows = dict(
            conn.execute("SELECT status, count(*) FROM ledger.holds GROUP BY 1").fetchall()
        )
        assert sum(hold_rows.values()) == holds["created"]
        assert hold_rows.get("captured", 0) == holds["captured"]
        assert hold_rows.get("released", 0) == holds["released"]
        shared = conn.execute(
            "SELECT count(*) FROM ledger.entries WHERE idempotency_key LIKE 'shared-%'"
        ).fetchone()
        balances = dict(conn.execute("SELECT owner_id, balance FROM ledger.accounts").fetchall())
    return {
        "threads": THREADS,
        "seconds": round(elapsed, 1),
        "batches": bool(batches[0]),
        "calls": sum(calls.values()),
        "by_outcome": dict(sorted(calls.items())),
        "entries": dict(sorted(in_table.items())),
        "expire_entries": expired,
        "void_entries_given_back": revoided,
        "holds": dict(hold_rows),
        "shared_keys_written": shared[0] if shared else 0,
        "final_balances": balances,
    }


def test_torture(db_url: str) -> None:
    seconds = float(os.environ.get("LEDGER_TORTURE_SECONDS", "20"))
    REPORT["default"] = _torture(db_url, seconds)
    print(f"\ntorture {REPORT['default']}")


@pytest.mark.slow
def test_torture_long(db_url: str) -> None:
    REPORT["long"] = _torture(db_url, 120.0)
    print(f"\ntorture (long) {REPORT['long']}")


def test_large_batch_and_single_call_racing_for_one_key(db_url: str) -> None:
    """A batch of more than 64 items takes no per-key lock (sql/50_batches.sql):
    it relies on the account locks and the unique index. Forced interleaving:
    the batch queues for the owner's row first, then a post_entry with the
    same request (key checked, nothing found yet) queues behind it. The
    batch writes the key; the single call must then refuse (LG005) or replay,
    never write a second entry and never surface a unique violation."""
    items = [
        {
            "owner_id": "racer",
            "app": "core",
            "operation": "CREDIT_ADD",
            "idempotency_key": "contested",
            "amount": 3,
        }
    ]
    items += [
        {
            "owner_id": f"filler-{i}",
            "app": "core",
            "operation": "CREDIT_ADD",
            "idempotency_key": f"filler-{i}",
            "amount": 1,
        }
        for i in range(100)
    ]
    single = {"owner_id": "racer", "operation": "CREDIT_ADD", "key": "contested", "amount": 3}
    outcome: dict[str, Any] = {}

    def run(name: str, query: str, params: dict[str, Any]) -> None:
        with psycopg.connect(db_url, autocommit=True) as c:
            try:
                outcome[name] = c.execute(query, params).fetchall()
            except psycopg.Error as exc:
                outcome[name] = exc.sqlstate

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(POST, {**single, "key": "racer-seed"})
        with psycopg.connect(db_url) as blocker:
            blocker.execute("SELECT 1 FROM ledger.accounts WHERE owner_id = 'racer' FOR UPDATE")
            batch = threading.Thread(
                target=run, args=("batch", BATCH, {"entries": json.dumps(items)})
            )
            batch.start()
            _wait_for_waiters(conn, 1)
            post = threading.Thread(target=run, args=("single", POST, single))
            post.start()
            _wait_for_waiters(conn, 2)
            blocker.rollback()
        batch.join(timeout=60)
        post.join(timeout=60)
        assert isinstance(outcome["batch"], list) and len(outcome["batch"]) == len(items)
        assert outcome["single"] == "LG005" or outcome["single"][0][-1] is True, outcome["single"]
        assert conn.execute(
            "SELECT count(*) FROM ledger.entries WHERE idempotency_key = 'contested'"
        ).fetchone() == (1,)
        assert ledger_problems(conn) == []
        # A retry of the refused call is a replay of the batch's entry.
        assert conn.execute(POST, single).fetchone()[-1] is True  # type: ignore[index]
    REPORT["batch race"] = outcome["single"] if isinstance(outcome["single"], str) else "replay"


def _wait_for_waiters(conn: psycopg.Connection[Any], count: int) -> None:
    deadline = time.monotonic() + 30
    while (
        conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%ledger.post_entr%'"
        ).fetchone()[0]
        < count
    ):  # type: ignore[index]
        assert time.monotonic() < deadline, "the calls never queued for the lock"
        time.sleep(0.02)
