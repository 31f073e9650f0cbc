"""Crash: writers post entries on a durable server (fsync and synchronous_commit
on) while the server is killed with SIGKILL and started again on the same data.

Every writer remembers what it sent and which calls returned (acknowledged),
which came back with a business error (refused: nothing written) and which
were cut off by the crash (in doubt). After the restart:

* every acknowledged write is present exactly once, as the same entry;
* a refused write is absent;
* an in-doubt write is present 0 or 1 times, and retrying it with the same
  idempotency key replays it if present, writes it once if not: never twice;
* ledger.verify() is empty and no balance is negative.

Two kinds of crash: the postmaster alone (its backends finish what they
were doing and exit), and the postmaster together with every backend (a
commit can then be cut between the WAL flush and the answer). A SIGKILL
keeps the kernel's page cache, so this proves WAL replay and the commit
protocol, not the disk's honesty about fsync (a power cut is out of reach).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from ledger_py.migrate import migrate

from .crashable_server import durable_server, kill_postmaster, restart
from .invariants import ledger_problems

WRITERS = 8
OWNERS = [f"crash-owner-{i}" for i in range(6)]
RUN_SECONDS = float(os.environ.get("LEDGER_CRASH_SECONDS", "2.0"))
REPORT: dict[str, Any] = {}


@dataclass
class Outcomes:
    """What one writer knows about its calls, by idempotency key."""

    acked: dict[str, tuple[dict[str, Any], int]] = field(
        default_factory=dict
    )  # key -> (request, entry_id)
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_doubt: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def crash_server() -> Iterator[Any]:
    server = durable_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def crash_url(crash_server: Any) -> str:
    with psycopg.connect(crash_server.url(database="postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE crash")
    url = str(crash_server.url(database="crash"))
    migrate(url)
    return url


def _request(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["credit", "credit", "debit", "transfer"])
    if kind == "transfer":
        source, target = rng.sample(OWNERS, 2)
        return {
            "kind": kind,
            "from_owner": source,
            "to_owner": target,
            "amount": rng.randint(1, 30),
        }
    operation = "CREDIT_ADD" if kind == "credit" else "CREDIT_SPEND"
    return {
        "kind": kind,
        "owner_id": rng.choice(OWNERS),
        "operation": operation,
        "amount": rng.randint(1, 100 if kind == "credit" else 40),
    }


def _send(conn: psycopg.Connection[Any], key: str, request: dict[str, Any]) -> tuple[int, bool]:
    """One call as the app role: (entry_id carrying the key, replayed)."""
    if request["kind"] == "transfer":
        row = conn.execute(
            "SELECT from_entry_id, replayed FROM ledger.transfer(from_owner => %s, to_owner => %s,"
            " amount => %s, app => 'core', idempotency_key => %s)",
            (request["from_owner"], request["to_owner"], request["amount"], key),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT entry_id, replayed FROM ledger.post_entry(owner_id => %s, app => 'core',"
            " operation => %s, idempotency_key => %s, amount => %s)",
            (request["owner_id"], request["operation"], key, request["amount"]),
        ).fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def _writer(url: str, name: str, seed: int, stop: threading.Event, out: Outcomes) -> None:
    rng = random.Random(seed)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ROLE ledger_app")
        for i in range(1_000_000):
            if stop.is_set():
                return
            key, request = f"{name}-{i}", _request(rng)
            try:
                entry_id, replayed = _send(conn, key, request)
            except psycopg.Error as exc:
                if exc.sqlstate == "LG001":
                    out.refused[key] = request
                    continue
                out.in_doubt[key] = request  # the crash: sent, no answer
                return
            assert not replayed, (key, request)
            out.acked[key] = (request, entry_id)


def _run_and_crash(
    url: str, server: Any, cycle: int, kill_backends: bool
) -> tuple[list[Outcomes], dict[str, Any]]:
    outcomes = [Outcomes() for _ in range(WRITERS)]
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_writer, args=(url, f"c{cycle}w{i}", cycle * 100 + i, stop, outcomes[i])
        )
        for i in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(RUN_SECONDS)
    # every_process: as a kernel OOM kill or a machine crash would leave them,
    # commits may be cut between the WAL flush and the answer.
    seen = kill_postmaster(server, every_process=kill_backends)
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a writer hung after the crash"
    stop.set()
    seen["restart_seconds"] = restart(server)
    return outcomes, seen


def _count_key(conn: psycopg.Connection[Any], key: str) -> list[int]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT entry_id FROM ledger.entries WHERE app = 'core' AND idempotency_key = %s",
            (key,),
        ).fetchall()
    ]


@pytest.mark.parametrize(
    "cycle,kill_backends", [(1, False), (2, True)], ids=["postmaster", "every-process"]
)
def test_acknowledged_writes_survive_sigkill(
    crash_url: str, crash_server: Any, cycle: int, kill_backends: bool
) -> None:
    outcomes, seen = _run_and_crash(crash_url, crash_server, cycle, kill_backends)
    acked = {k: v for o in outcomes for k, v in o.acked.items()}
    refused = {k: v for o in outcomes for k, v in o.refused.items()}
    in_doubt = {k: v for o in outcomes for k, v in o.in_doubt.items()}
    assert len(acked) > 50, "the writers barely wrote before the crash"

    with psycopg.connect(crash_url, autocommit=True) as conn:
        for key, (_request, entry_id) in acked.items():
            assert _count_key(conn, key) == [entry_id], f"acknowledged write {key} lost or doubled"
        for key in refused:
            assert _count_key(conn, key) == [], f"refused write {key} is present"
        doubt_present = 0
        conn.execute("SET ROLE ledger_app")
        for key, request in in_doubt.items():
            before = _count_key(conn, key)
            assert len(before) <= 1, f"in-doubt write {key} present {len(before)} times"
            doubt_present += len(before)
            try:
                entry_id, replayed = _send(conn, key, request)
            except psycopg.Error as exc:
                assert exc.sqlstate == "LG001" and not before, (key, exc)
                continue
            assert replayed == bool(before), (key, before, replayed)
            assert _count_key(conn, key) == [entry_id]
            # The same retry once more is a replay of that one entry.
            assert _send(conn, key, request) == (entry_id, True)
        conn.execute("RESET ROLE")
        assert ledger_problems(conn) == []
        total = conn.execute("SELECT count(*) FROM ledger.entries").fetchone()

    REPORT[f"cycle {cycle} ({'every process' if kill_backends else 'postmaster'})"] = {
        "acknowledged": len(acked),
        "refused": len(refused),
        "in_doubt": len(in_doubt),
        "in_doubt_present_before_retry": doubt_present,
        "entries_total": total[0] if total else 0,
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in seen.items()},
    }
    print(f"\ncrash {REPORT}")
