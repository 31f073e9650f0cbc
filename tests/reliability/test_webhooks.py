"""The webhook dispatcher against real HTTP receivers (tests/reliability/webhook_receiver.py).

Every dispatcher here is the real `ledger webhooks run` in a process of its
own, with a short poll, timeout, lease and backoff so that each scenario
takes seconds; the events are real (entries posted through the SQL API).

* SIGKILL of the dispatcher mid-delivery loses nothing: every event arrives
  at least once, and a duplicate carries the same webhook-id;
* a receiver down for a while gets everything once it is back;
* a receiver answering 500, one that hangs, and one failing event back off
  without delaying the other endpoints or events; past the horizon a
  delivery is failed;
* the receiver's own signature check (the standardwebhooks package) passes,
  and fails for a tampered body or another secret;
* 10,000 events written by 8 writers all arrive, each exactly once, at a
  receiver that never fails.

The signature scenario runs on the Citus cluster too (tests/conftest.py,
CITUS_CONTRACT): the dispatcher end to end on the coordinator, the events
written on the workers. The others are about the dispatcher's own
behaviour, the same on either server, and run on plain PostgreSQL only.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from standardwebhooks import Webhook, WebhookVerificationError

from .webhook_receiver import HANG, Receiver, free_port

REPO = Path(__file__).resolve().parents[2]

# Fast settings: a tick every 50 ms, 1 s per attempt, a lease of 3 s,
# retries after 0.2 s, 0.4 s, 0.8 s, ... at most 1 s (half of it jitter).
FAST = {
    "--poll-interval": "0.05",
    "--timeout": "1",
    "--lease": "3",
    "--backoff-base": "0.2",
    "--backoff-max": "1",
}


@contextmanager
def dispatcher(db_url: str, log: Path, **options: str) -> Iterator[subprocess.Popen[bytes]]:
    """`ledger webhooks run` with FAST settings (options override them, as
    --name=value with underscores for dashes); SIGTERM at the end, which must
    end it cleanly unless the test killed it."""
    settings = dict(FAST, **{f"--{k.replace('_', '-')}": v for k, v in options.items()})
    args = [word for pair in settings.items() for word in pair]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(LEDGER_DATABASE_URL=db_url, PYTHONUNBUFFERED="1", LEDGER_LOG_LEVEL="info")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger_cli", "webhooks", "run", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
            assert code == 0, log.read_text()
            assert "Traceback" not in log.read_text(), log.read_text()


def endpoint(conn: psycopg.Connection[Any], url: str, **params: Any) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        names = ", ".join(f"{k} => %({k})s" for k in params)
        cur.execute(
            "SELECT * FROM ledger.create_webhook_endpoint(app => 'core', url => %(url)s"
            + (f", {names}" if names else "")
            + ")",
            {"url": url, **params},
        )
        row = cur.fetchone()
    assert row is not None
    return row


def post_events(conn: psycopg.Connection[Any], n: int, prefix: str) -> None:
    """n entries (n entry.posted events) in one batch."""
    items = [
        {
            "owner_id": f"{prefix}-{i % 10}",
            "app": "core",
            "operation": "CREDIT_ADD",
            "idempotency_key": f"{prefix}-{i}",
            "amount": 1,
        }
        for i in range(n)
    ]
    conn.execute("SELECT count(*) FROM ledger.post_entries(%s)", (json.dumps(items),))


def event_ids(conn: psycopg.Connection[Any]) -> set[int]:
    return {row[0] for row in conn.execute("SELECT event_id FROM ledger.events").fetchall()}


def statuses(conn: psycopg.Connection[Any], endpoint_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM ledger.webhook_deliveries WHERE endpoint_id = %s GROUP BY status",
        (endpoint_id,),
    ).fetchall()
    return {status: count for status, count in rows}


def same_webhook_id_per_event(receiver: Receiver) -> bool:
    return all(r.webhook_id == f"evt_{r.event['event_id']}" for r in receiver.snapshot())


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.mark.plain_only("the dispatcher's behaviour, the same on either server")
def test_sigkill_mid_delivery_loses_nothing(db_url, conn, tmp_path):
    with Receiver(delay=0.1) as receiver:
        hook = endpoint(conn, receiver.url)
        post_events(conn, 150, "kill")
        expected = event_ids(conn)
        log = tmp_path / "dispatcher.log"
        with dispatcher(db_url, log, concurrency="8", per_endpoint="8") as first:
            receiver.wait_for(lambda r: len(r.received) >= 40, timeout=30)
            first.send_signal(signal.SIGKILL)  # answers in flight are never recorded
            first.wait(10)
        got_before = receiver.event_ids()
        assert set(got_before) < expected
        with dispatcher(db_url, log, concurrency="8", per_endpoint="8"):
            receiver.wait_for(lambda r: set(r.event_ids()) == expected, timeout=60)
            deadline = time.monotonic() + 10
            while statuses(conn, hook["endpoint_id"]) != {"delivered": 150}:
                assert time.monotonic() < deadline, statuses(conn, hook["endpoint_id"])
                time.sleep(0.1)
    received = receiver.event_ids()
    duplicates = {e: n for e, n in received.items() if n > 1}
    # The attempts the kill cut off were sent again after their lease ran out.
    assert duplicates, "no attempt was in flight at the kill"
    assert same_webhook_id_per_event(receiver)
    retried = conn.execute(
        "SELECT count(*) FROM ledger.webhook_deliveries WHERE attempts > 1"
    ).fetchone()
    assert retried is not None and retried[0] >= len(duplicates)


@pytest.mark.plain_only("the dispatcher's behaviour, the same on either server")
def test_a_receiver_down_for_a_while_gets_everything_when_it_returns(db_url, conn, tmp_path):
    port = free_port()
    down = Receiver(port=port)
    hook = endpoint(conn, down.url)
    post_events(conn, 50, "down")
    with dispatcher(db_url, tmp_path / "dispatcher.log"):
        deadline = time.monotonic() + 20
        while True:  # every delivery failed at least twice: it backs off and tries again
            row = conn.execute(
                "SELECT min(attempts) FROM ledger.webhook_deliveries WHERE endpoint_id = %s",
                (hook["endpoint_id"],),
            ).fetchone()
            if row and row[0] and row[0] >= 2:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        log = conn.execute(
            "SELECT DISTINCT outcome, left(error, 30) FROM ledger.webhook_attempts"
        ).fetchall()
        assert {outcome for outcome, _ in log} == {"retry"}
        with down as receiver:
            receiver.wait_for(lambda r: len(r.event_ids()) == 50, timeout=20)
            deadline = time.monotonic() + 10
            while statuses(conn, hook["endpoint_id"]) != {"delivered": 50}:
                assert time.monotonic() < deadline
                time.sleep(0.1)


@pytest.mark.plain_only("the dispatcher's behaviour, the same on either server")
def test_failing_and_hanging_receivers_back_off_without_delaying_the_others(
    db_url, conn, tmp_path
):
    post_events(conn, 1, "before")  # endpoints start after this one
    with (
        Receiver() as good,
        Receiver(lambda _: 500) as failing,
        Receiver(lambda _: HANG) as hanging,
        Receiver() as picky,
    ):
        # The failing and hanging endpoints first: their deliveries come first
        # in every claim (same time, lower ids), so the others get slots only
        # because one endpoint may hold at most --per-endpoint of them.
        hooks = {name: endpoint(conn, r.url) for name, r in
                 [("hanging", hanging), ("failing", failing), ("good", good), ("picky", picky)]}
        post_events(conn, 1, "poison")
        poison = max(event_ids(conn))
        picky.behave = lambda r: 500 if r.event["event_id"] == poison else 204
        post_events(conn, 100, "load")
        with dispatcher(
            db_url,
            tmp_path / "dispatcher.log",
            concurrency="16",
            per_endpoint="4",
            backoff_base="0.4",
            backoff_max="2",
        ):
            good.wait_for(lambda r: len(r.event_ids()) == 101, timeout=30)
            picky.wait_for(lambda r: len(r.event_ids()) == 101, timeout=30)
            # From the dispatcher's first delivery (its start-up is not the
            # point) to the good endpoints' last.
            started = min(r.at for receiver in (good, failing, hanging, picky)
                          for r in receiver.snapshot())
            elapsed = max(r.at for receiver in (good, picky) for r in receiver.snapshot()) - started
            time.sleep(2.5)  # the failing ones keep failing, with growing delays
        # The good endpoints got everything within seconds, while the failing
        # one kept 4 slots and the hanging one 4 slots for a second each time
        # (without the per-endpoint bound, the hanging one's 101 deliveries
        # take all 16 slots for a second at a time: over 6 s).
        assert elapsed < 4, elapsed
        assert statuses(conn, hooks["good"]["endpoint_id"]) == {"delivered": 101}
        assert statuses(conn, hooks["picky"]["endpoint_id"]) == {"delivered": 100, "pending": 1}
        assert statuses(conn, hooks["failing"]["endpoint_id"]) == {"pending": 101}
        # The failing endpoint's attempts of one event: each waited at least
        # half its backoff (0.4 s, 0.8 s, 1.6 s: equal jitter).
        for event in list(failing.event_ids())[:5]:
            times = [r.at for r in failing.snapshot() if r.event["event_id"] == event]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert gaps, event
            for n, gap in enumerate(gaps):
                assert gap >= 0.2 * 2**n * 0.95, (event, gaps)
        # The hanging one: every attempt cut at the 1 s timeout, retried later.
        timeouts = conn.execute(
            "SELECT count(*), min(duration_ms) FROM ledger.webhook_attempts"
            " WHERE endpoint_id = %s",
            (hooks["hanging"]["endpoint_id"],),
        ).fetchone()
        assert timeouts is not None and timeouts[0] >= 4 and timeouts[1] >= 950
        errors = conn.execute(
            "SELECT DISTINCT error FROM ledger.webhook_attempts WHERE endpoint_id = %s",
            (hooks["hanging"]["endpoint_id"],),
        ).fetchall()
        assert errors == [("timeout after 1 s",)]


@pytest.mark.plain_only("the dispatcher's behaviour, the same on either server")
def test_past_the_horizon_a_delivery_is_failed(db_url, conn, tmp_path):
    with Receiver(lambda _: 500) as failing:
        hook = endpoint(conn, failing.url)
        post_events(conn, 3, "horizon")
        with dispatcher(db_url, tmp_path / "dispatcher.log", horizon="1s"):
            deadline = time.monotonic() + 20
            while statuses(conn, hook["endpoint_id"]) != {"failed": 3}:
                assert time.monotonic() < deadline, statuses(conn, hook["endpoint_id"])
                time.sleep(0.1)
        outcomes = conn.execute(
            "SELECT outcome FROM ledger.webhook_attempts ORDER BY attempted_at"
        ).fetchall()
        assert outcomes[-1] == ("failed",) and ("retry",) in outcomes


def test_the_receivers_signature_check_passes_and_a_tampered_body_fails(db_url, conn, tmp_path):
    secrets: dict[str, str] = {}
    with Receiver() as receiver:
        created = endpoint(conn, receiver.url)
        receiver.secret = secrets["mine"] = created["secret"]
        secrets["other"] = endpoint(conn, "https://example.com/other")["secret"]
        post_events(conn, 20, "signed")
        with dispatcher(db_url, tmp_path / "dispatcher.log"):
            receiver.wait_for(lambda r: len(r.event_ids()) == 20, timeout=20)
    assert (receiver.verified, receiver.unverified) == (len(receiver.received), 0)
    sample = receiver.snapshot()[0]
    # The headers as Standard Webhooks has them; the time is the attempt's.
    assert sample.webhook_id == f"evt_{sample.event['event_id']}"
    assert abs(int(sample.timestamp) - datetime.now(timezone.utc).timestamp()) < 60
    assert sample.signature.startswith("v1,")
    Webhook(secrets["mine"]).verify(sample.body, sample.headers)
    tampered = sample.body.replace(b'"amount": 1', b'"amount": 1000')
    assert tampered != sample.body
    with pytest.raises(WebhookVerificationError):
        Webhook(secrets["mine"]).verify(tampered, sample.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secrets["other"]).verify(sample.body, sample.headers)
    with pytest.raises(WebhookVerificationError):  # another message's id
        Webhook(secrets["mine"]).verify(sample.body, {**sample.headers, "webhook-id": "evt_0"})


@pytest.mark.plain_only("the dispatcher's behaviour, the same on either server")
def test_10000_events_from_8_writers_each_arrive_exactly_once(db_url, conn, tmp_path):
    writers, per_writer = 8, 1250
    with Receiver() as receiver:
        hook = endpoint(conn, receiver.url)
        with dispatcher(
            db_url, tmp_path / "dispatcher.log", concurrency="64", per_endpoint="64"
        ):
            failures: list[BaseException] = []

            def write(w: int) -> None:
                try:
                    with psycopg.connect(db_url, autocommit=True) as mine:
                        for i in range(per_writer):
                            mine.execute(
                                "SELECT ledger.post_entry(owner_id => %s, app => 'core',"
                                " operation => 'CREDIT_ADD', idempotency_key => %s, amount => 1)",
                                (f"writer-{w}-{i % 25}", f"w{w}-{i}"),
                            )
                except BaseException as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert failures == []
            total = writers * per_writer
            receiver.wait_for(lambda r: len(r.received) >= total, timeout=90)
            deadline = time.monotonic() + 20
            while statuses(conn, hook["endpoint_id"]) != {"delivered": total}:
                assert time.monotonic() < deadline, statuses(conn, hook["endpoint_id"])
                time.sleep(0.2)
            time.sleep(0.5)  # nothing more comes
    received = receiver.event_ids()
    assert len(received) == total and set(received.values()) == {1}
    assert len(receiver.received) == total
    assert set(received) == event_ids(conn)
    assert same_webhook_id_per_event(receiver)
