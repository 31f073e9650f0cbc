"""Crash over HTTP: a gunicorn worker is killed with SIGKILL mid-request, the
client retries with the same Idempotency-Key, and the effect happens exactly
once.

gunicorn runs as deployed (web.gunicorn_conf, web.wsgi:app), one worker so
the victim is known; the master starts a new worker after each kill.

1. Deterministic: the owner's account row is locked from outside, so the
   worker's debit waits inside the database; the worker is killed there.
   Its database session lives on, commits when the lock is released, and
   cannot answer anyone. The retry must find that write (a replay), never
   write a second one.
2. Random: a client posts a stream of entries (each retried with its own key
   until it gets an answer) while the worker is killed 5 times at random
   moments (0.1-0.6 s after each new worker answers);
   afterwards every key names exactly one entry, and every answer the client
   got names that entry.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger_py import Ledger
from ledger_py.tokens import create_api_key

from .invariants import ledger_problems

ROOT = Path(__file__).resolve().parents[2]
RANDOM_KILLS = 5
STREAM = 150


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body) if body is not None else None
        conn.request(
            method,
            path,
            body=data,
            headers={**(headers or {}), **({"Content-Type": "application/json"} if data else {})},
        )
        response = conn.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw or b"null")
    finally:
        conn.close()


class Gunicorn:
    def __init__(self, db_url: str, log: Path) -> None:
        self.port = _free_port()
        env = dict(
            os.environ,
            LEDGER_DATABASE_URL=db_url,
            LEDGER_PORT=str(self.port),
            LEDGER_HOST="127.0.0.1",
            LEDGER_WORKERS="1",
            LEDGER_THREADS="4",
            LEDGER_POOL_SIZE="4",
            PYTHONUNBUFFERED="1",
        )
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "web.wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def workers(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def wait_ready(self, timeout: float = 90) -> int:
        """Until a worker answers /health; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "gunicorn exited"
            try:
                if request(self.port, "GET", "/health", timeout=5)[0] == 200 and self.workers():
                    return self.workers()[0]
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("gunicorn did not become ready")

    def kill_worker(self) -> int:
        victims = self.workers()
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)
        return victims[0]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[Gunicorn, str]]:
    with Ledger(db_url, min_size=1, max_size=2) as ledger:
        token = create_api_key(ledger, app="core").token
        CONTENT_TOKEN[db_url] = create_api_key(ledger, app="example_app").token
    server = Gunicorn(db_url, tmp_path / "gunicorn.log")
    try:
        yield server, token
    finally:
        server.stop()


CONTENT_TOKEN: dict[str, str] = {}


def _wait_for_lock_wait(db_url: str, fragment: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as watch:
        deadline = time.monotonic() + 30
        while not watch.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s",
            (f"%{fragment}%",),
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the request never reached the lock"
            time.sleep(0.02)


def _entries_with_key(db_url: str, key: str) -> list[int]:
    with psycopg.connect(db_url) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT entry_id FROM ledger.entries WHERE app = 'core' AND idempotency_key = %s",
                (key,),
            ).fetchall()
        ]


def test_worker_killed_while_its_write_waits_in_the_database(
    served: tuple[Gunicorn, str], db_url: str
) -> None:
    server, token = served
    auth = {"Authorization": f"Bearer {token}"}
    spend = {"owner_id": "victim", "operation": "CREDIT_SPEND", "amount": 7}
    assert (
        request(
            server.port,
            "POST",
            "/ledger",
            {"owner_id": "victim", "operation": "CREDIT_ADD", "amount": 100},
            {**auth, "Idempotency-Key": "fund"},
        )[0]
        == 201
    )
    outcome: dict[str, Any] = {}

    def first_try() -> None:
        try:
            outcome["answer"] = request(
                server.port, "POST", "/ledger", spend, {**auth, "Idempotency-Key": "spend-1"}
            )
        except (OSError, http.client.HTTPException) as exc:
            outcome["error"] = exc

    with psycopg.connect(db_url) as blocker:
        blocker.execute("SELECT 1 FROM ledger.accounts WHERE owner_id = 'victim' FOR UPDATE")
        client = threading.Thread(target=first_try)
        client.start()
        _wait_for_lock_wait(db_url, "post_entry")
        server.kill_worker()
        client.join(timeout=30)
        assert "error" in outcome, outcome  # the client got no answer
        assert _entries_with_key(db_url, "spend-1") == []
        blocker.rollback()  # the orphaned session goes on and commits

    server.wait_ready()
    status, headers, body = request(
        server.port, "POST", "/ledger", spend, {**auth, "Idempotency-Key": "spend-1"}
    )
    stored = _entries_with_key(db_url, "spend-1")
    assert len(stored) == 1
    assert status in (200, 201) and body["entry"]["entry_id"] == stored[0]
    # The orphan committed first (it held the key's lock): the retry is a replay.
    assert (status, headers.get("Idempotent-Replayed")) == (200, "true")
    again = request(server.port, "POST", "/ledger", spend, {**auth, "Idempotency-Key": "spend-1"})
    assert again[0] == 200 and again[2] == body
    status, _, balance = request(server.port, "GET", "/balance/victim", headers=auth)
    assert balance["balance"] == 93
    with psycopg.connect(db_url) as conn:
        assert ledger_problems(conn) == []


def test_worker_killed_at_random_moments_effects_happen_once(
    served: tuple[Gunicorn, str], db_url: str
) -> None:
    server, token = served
    auth = {"Authorization": f"Bearer {token}"}
    rng = random.Random(8)
    answers: dict[str, int] = {}
    retries = 0
    kills_done = threading.Event()
    written = 0

    def client() -> None:
        nonlocal retries, written
        i = 0
        while i < STREAM or not kills_done.is_set():
            key = f"stream-{i}"
            body = {"owner_id": f"o{i % 5}", "operation": "CREDIT_ADD", "amount": i % 9 + 1}
            deadline = time.monotonic() + 90
            while True:
                try:
                    status, _, answer = request(
                        server.port,
                        "POST",
                        "/ledger",
                        body,
                        {**auth, "Idempotency-Key": key},
                        timeout=20,
                    )
                    if status in (200, 201):
                        answers[key] = answer["entry"]["entry_id"]
                        break
                    assert status == 503, (status, answer)  # a worker still opening its pool
                except (OSError, http.client.HTTPException):
                    pass
                retries += 1
                assert time.monotonic() < deadline, f"{key} never answered"
                time.sleep(0.05)
            i += 1
            written = i

    thread = threading.Thread(target=client)
    thread.start()
    kills = 0
    while kills < RANDOM_KILLS and thread.is_alive():
        server.wait_ready()
        time.sleep(rng.uniform(0.1, 0.6))
        server.kill_worker()
        kills += 1
    kills_done.set()
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert kills == RANDOM_KILLS

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, count(*), min(entry_id) FROM ledger.entries"
            " WHERE idempotency_key LIKE 'stream-%' GROUP BY 1"
        ).fetchall()
        assert len(rows) == written == len(answers)
        assert all(count == 1 for _, count, _ in rows)
        assert {key: entry_id for key, _, entry_id in rows} == answers
        total = conn.execute(
            "SELECT sum(amount) FROM ledger.entries WHERE idempotency_key LIKE 'stream-%'"
        ).fetchone()
        assert total == (sum(i % 9 + 1 for i in range(written)),)
        assert ledger_problems(conn) == []
    print(f"\nhttp crash: {written} writes, {kills} worker kills, {retries} retries")


def test_worker_killed_while_content_is_paid_for(served: tuple[Gunicorn, str], db_url: str) -> None:
    """The example app's pattern under a crash: the hold is committed, then the
    capture and the content row share one transaction. The worker dies after
    the capture, while that transaction's INSERT waits: it never commits, the
    hold stays active, and the retry with the same key makes the content once
    and charges once."""
    server, core = served
    token = CONTENT_TOKEN[db_url]
    auth = {"Authorization": f"Bearer {token}", "Idempotency-Key": "content-1"}
    fund = {"owner_id": "writer", "operation": "CREDIT_ADD", "amount": 20}
    assert (
        request(
            server.port,
            "POST",
            "/ledger",
            fund,
            {"Authorization": f"Bearer {core}", "Idempotency-Key": "fund"},
        )[0]
        == 201
    )
    content = {"owner_id": "writer", "title": "crash", "body": "made once"}
    outcome: dict[str, Any] = {}

    def first_try() -> None:
        try:
            outcome["answer"] = request(server.port, "POST", "/content", content, auth)
        except (OSError, http.client.HTTPException) as exc:
            outcome["error"] = exc

    with psycopg.connect(db_url) as blocker:
        # The content row of the coming hold, inserted and left uncommitted: the
        # request's own INSERT (after its capture, in the same transaction)
        # waits on the unique hold_id until this transaction ends.
        next_hold = blocker.execute(
            "SELECT coalesce(last_value, 0) + 1 FROM pg_sequences"
            " WHERE schemaname = 'ledger' AND sequencename = 'holds_hold_id_seq'"
        ).fetchone()
        assert next_hold is not None
        blocker.execute(
            "INSERT INTO example_app.content (owner_id, title, body, hold_id, entry_id)"
            " VALUES ('writer', 'blocker', 'b', %s, 0)",
            (next_hold[0],),
        )
        client = threading.Thread(target=first_try)
        client.start()
        _wait_for_lock_wait(db_url, "INSERT INTO example_app.content")
        server.kill_worker()
        client.join(timeout=30)
        assert "error" in outcome, outcome
        blocker.rollback()  # the orphaned session inserts, then finds its client gone

    server.wait_ready()
    status, _, body = request(server.port, "POST", "/content", content, auth)
    # The first attempt's capture was rolled back with its transaction: the
    # retry finds the hold still active (a replay of create_hold) and no
    # content, so it does the work and pays now.
    assert status == 201 and body["charged"] is True, body
    again = request(server.port, "POST", "/content", content, auth)
    assert again[0] == 200 and again[2]["content"] == body["content"]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM example_app.content").fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*), sum(amount) FROM ledger.entries WHERE operation = 'CONTENT_CREATION'"
        ).fetchone() == (1, -5)
        assert conn.execute("SELECT status, count(*) FROM ledger.holds GROUP BY 1").fetchall() == [
            ("captured", 1)
        ]
        assert conn.execute(
            "SELECT balance FROM ledger.accounts WHERE owner_id = 'writer'"
        ).fetchone() == (15,)
        assert ledger_problems(conn) == []
