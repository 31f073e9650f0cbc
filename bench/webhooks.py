"""`python -m bench --webhooks [--quick]`: how fast the webhook dispatcher
delivers to a local receiver that answers at once.

On a durable throwaway server (fsync and synchronous_commit on, as the main
benchmark), with the receiver in a process of its own
(bench/webhook_receiver.py) and every dispatcher the real `ledger webhooks
run` in a process of its own:

* **throughput**: N events are written (entries posted in batches) while the
  endpoint is disabled and relayed into the feed; then the endpoint is
  enabled and the clock runs until the receiver has all N. The dispatchers'
  work is everything after the relay: the fan-out into deliveries, the
  claims, the signed POSTs and the recorded outcomes. 1 dispatcher, then 4.
  The baseline, in the same round: a bare aiohttp client posting the same
  number of signed bodies of the same size to the same receiver with the
  same number in flight, no database at all: what the HTTP side alone
  allows on this machine.
* **latency**: one writer posts entries one by one at a steady rate while
  one dispatcher runs; for each event, the time from the writer's commit
  (post_entry returned) to its arrival at the receiver (wall clock, one
  machine), at the default poll interval and at a shorter one.

Results: bench/results/webhooks.md and .json (quick: bench/results/tmp/).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.dataset import create_database
from bench.measure import percentile
from bench.server import load_average, machine_info, server_settings, start_server
from ledger_cli.dispatcher import signed_headers
from ledger_py.migrate import migrate

REPO = Path(__file__).resolve().parents[1]
DATABASE = "ledger_bench_webhooks"
IN_FLIGHT = 64  # per dispatcher: its --concurrency and --per-endpoint
THROUGHPUT_POLL = "0.1"
LATENCY_POLLS = ("0.5", "0.1")  # the default, and a shorter one
LATENCY_RATE = 100  # events/s written during a latency run


@dataclass(frozen=True)
class Plan:
    mode: str
    runs: int
    events: int  # per throughput run
    latency_seconds: float
    out: Path


def say(text: str) -> None:
    print(text, flush=True)


class ReceiverProcess:
    """bench/webhook_receiver.py on a free port, for one run."""

    def __init__(self, folder: Path, name: str) -> None:
        self.port = _free_port()
        self.out = folder / f"{name}.receipts"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.webhook_receiver", str(self.port), str(self.out)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def count(self) -> int:
        with urllib_open(f"http://127.0.0.1:{self.port}/count") as response:
            return int(response.read())

    def stop(self) -> dict[str, float]:
        """Stop it; webhook-id -> arrival (the first, if one came twice)."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        arrivals: dict[str, float] = {}
        for line in self.out.read_text().splitlines():
            webhook_id, at = line.split()
            arrivals.setdefault(webhook_id, float(at))
        return arrivals


def urllib_open(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_dispatchers(url: str, count: int, poll: str, log: Path) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(LEDGER_DATABASE_URL=url, LEDGER_LOG_LEVEL="warning")
    args = ["--poll-interval", poll, "--concurrency", str(IN_FLIGHT)]
    args += ["--per-endpoint", str(IN_FLIGHT)]
    processes = []
    with log.open("ab") as out:
        for _ in range(count):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ledger_cli", "webhooks", "run", *args],
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    return processes


def stop_dispatchers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=60)


def wait_ready(url: str, dispatchers: int, timeout: float = 60) -> None:
    """Until every dispatcher has connected (its pool's connection shows in pg_stat_activity)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ''"
                " AND datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if row and row[0] >= dispatchers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the dispatchers did not connect")
            time.sleep(0.1)


def write_events(conn: psycopg.Connection[Any], n: int, tag: str) -> None:
    """n entry.posted events: entries posted in batches of 1,000."""
    for start in range(0, n, 1000):
        items = [
            {
                "owner_id": f"o{i % 1000}",
                "app": "bench",
                "operation": "CREDIT_ADD",
                "idempotency_key": f"{tag}-{i}",
                "amount": 1,
            }
            for i in range(start, min(n, start + 1000))
        ]
        conn.execute("SELECT count(*) FROM ledger.post_entries(%s)", (json.dumps(items),))


def relay_all(conn: psycopg.Connection[Any]) -> None:
    while True:
        row = conn.execute("SELECT ledger.relay_events(10000)").fetchone()
        if not row or row[0] == 0:
            return


def new_endpoint(conn: psycopg.Connection[Any], url: str, active: bool) -> int:
    """A new endpoint of app bench (the only active one when `active`)."""
    conn.execute(
        "UPDATE ledger.webhook_endpoints SET active = false, disabled_at = now() WHERE active"
    )
    row = conn.execute(
        "SELECT endpoint_id FROM ledger.create_webhook_endpoint('bench', %s)", (url,)
    ).fetchone()
    assert row is not None
    if not active:
        conn.execute("SELECT ledger.set_webhook_endpoint_active(%s, 'bench', false)", (row[0],))
    return int(row[0])


def wait_for(receiver: ReceiverProcess, n: int, timeout: float) -> float:
    """Until the receiver has n requests; the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        if receiver.count() >= n:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the receiver got {receiver.count()} of {n} in {timeout} s")
        time.sleep(0.01)


# ---- the scenarios -------------------------------------------------------------------------------


def dispatch_run(url: str, dispatchers: int, n: int, folder: Path, tag: str) -> dict[str, Any]:
    receiver = ReceiverProcess(folder, tag)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            endpoint_id = new_endpoint(conn, receiver.url, active=False)
            write_events(conn, n, tag)
            relay_all(conn)
            processes = start_dispatchers(
                url, dispatchers, THROUGHPUT_POLL, folder / "dispatchers.log"
            )
            wait_ready(url, dispatchers)
            time.sleep(0.5)
            started = time.monotonic()
            conn.execute(
                "SELECT ledger.set_webhook_endpoint_active(%s, 'bench', true)", (endpoint_id,)
            )
            finished = wait_for(receiver, n, timeout=600)
        seconds = finished - started
    finally:
        if processes:
            stop_dispatchers(processes)
        arrivals = receiver.stop()
    return {
        "events": n,
        "seconds": round(seconds, 3),
        "rate": n / seconds,
        "distinct": len(arrivals),
    }


def bare_client_run(body: str, n: int, in_flight: int, folder: Path, tag: str) -> dict[str, Any]:
    """The same number of signed POSTs of a body of the same size, no database."""
    receiver = ReceiverProcess(folder, tag)
    secret = "whsec_" + "A" * 43 + "="

    async def post_all() -> float:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    headers = signed_headers(secret, f"evt_{i}", body, datetime.now(timezone.utc))
                    async with session.post(
                        receiver.url,
                        data=body.encode(),
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as response:
                        await response.read()

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return time.monotonic() - started

    try:
        seconds = asyncio.run(post_all())
    finally:
        arrivals = receiver.stop()
    return {
        "events": n,
        "seconds": round(seconds, 3),
        "rate": n / seconds,
        "distinct": len(arrivals),
    }


def latency_run(url: str, poll: str, seconds: float, folder: Path, tag: str) -> dict[str, Any]:
    receiver = ReceiverProcess(folder, tag)
    processes: list[subprocess.Popen[bytes]] = []
    committed: dict[int, float] = {}  # entry_id -> wall time its commit was acknowledged
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            new_endpoint(conn, receiver.url, active=True)
            processes = start_dispatchers(url, 1, poll, folder / "dispatchers.log")
            wait_ready(url, 1)
            time.sleep(1.0)
            interval = 1.0 / LATENCY_RATE
            total = int(seconds * LATENCY_RATE)
            start = time.monotonic()
            for i in range(total):
                pause = start + i * interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                row = conn.execute(
                    "SELECT entry_id FROM ledger.post_entry('o' || %s, 'bench', 'CREDIT_ADD',"
                    " %s, 1)",
                    (i % 1000, f"{tag}-{i}"),
                ).fetchone()
                assert row is not None
                committed[int(row[0])] = time.time()
            wait_for(receiver, total, timeout=120)
            events = dict(
                conn.execute(
                    "SELECT event_id, entry_id FROM ledger.events"
                    " WHERE type = 'entry.posted' AND entry_id = ANY(%s)",
                    (list(committed),),
                ).fetchall()
            )
    finally:
        if processes:
            stop_dispatchers(processes)
        arrivals = receiver.stop()
    latencies = sorted(
        (arrivals[f"evt_{event_id}"] - committed[entry_id]) * 1000
        for event_id, entry_id in events.items()
        if f"evt_{event_id}" in arrivals
    )
    return {
        "events": len(latencies),
        "poll_interval": float(poll),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "mean_ms": statistics.fmean(latencies) if latencies else None,
    }


# ---- the run and its report ----------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def run(plan: Plan) -> dict[str, Any]:
    # The receipts and the dispatchers' log: removed after a run, kept (and
    # named) when it fails.
    folder = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    server = start_server()
    load_before = load_average()
    try:
        server_url = server.url(database="postgres")
        url = create_database(server_url, DATABASE)
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT ledger.define_app('bench', 'benchmarks')")
        settings = server_settings(url)
        rounds: list[dict[str, Any]] = []
        body = ""
        for r in range(plan.runs):
            say(f"round {r + 1}/{plan.runs}: 1 dispatcher, {plan.events} events")
            one = dispatch_run(url, 1, plan.events, folder, f"r{r}-d1")
            say(f"  {one['rate']:,.0f} events/s; 4 dispatchers")
            four = dispatch_run(url, 4, plan.events, folder, f"r{r}-d4")
            say(f"  {four['rate']:,.0f} events/s; the bare client baseline")
            if not body:
                with psycopg.connect(url, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT body FROM ledger.webhook_deliveries LIMIT 1"
                    ).fetchone()
                assert row is not None
                body = row[0]
            bare = {
                n: bare_client_run(body, plan.events, IN_FLIGHT * n, folder, f"r{r}-bare{n}")
                for n in (1, 4)
            }
            say(f"  {bare[1]['rate']:,.0f} / {bare[4]['rate']:,.0f} events/s")
            latency = {}
            for poll in LATENCY_POLLS:
                say(f"  latency, poll {poll} s, {LATENCY_RATE} events/s")
                latency[poll] = latency_run(
                    url, poll, plan.latency_seconds, folder, f"r{r}-lat{poll}"
                )
                figures = latency[poll]
                say(f"    p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms")
            rounds.append(
                {
                    "one": one,
                    "four": four,
                    "bare_one": bare[1],
                    "bare_four": bare[4],
                    "latency": latency,
                }
            )
    except BaseException:
        say(f"the dispatchers' log and the receipts are in {folder}")
        raise
    finally:
        load_after = load_average()
        server.stop()
    summary = {
        "one": _median([r["one"]["rate"] for r in rounds]),
        "four": _median([r["four"]["rate"] for r in rounds]),
        "bare_one": _median([r["bare_one"]["rate"] for r in rounds]),
        "bare_four": _median([r["bare_four"]["rate"] for r in rounds]),
        "one_to_bare": _median([r["one"]["rate"] / r["bare_one"]["rate"] for r in rounds]),
        "four_to_bare": _median([r["four"]["rate"] / r["bare_four"]["rate"] for r in rounds]),
        "four_to_one": _median([r["four"]["rate"] / r["one"]["rate"] for r in rounds]),
        "latency": {
            poll: {
                key: _median([r["latency"][poll][key] for r in rounds])
                for key in ("p50_ms", "p99_ms", "max_ms", "mean_ms")
            }
            for poll in LATENCY_POLLS
        },
    }
    return {
        "plan": {
            "mode": plan.mode,
            "runs": plan.runs,
            "events": plan.events,
            "latency_seconds": plan.latency_seconds,
            "latency_rate": LATENCY_RATE,
            "in_flight_per_dispatcher": IN_FLIGHT,
            "throughput_poll": float(THROUGHPUT_POLL),
        },
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": settings,
        "load": {"before": load_before, "after": load_after},
        "rounds": rounds,
        "summary": summary,
        "work": str(folder),
    }


def report(results: dict[str, Any]) -> str:
    plan, s = results["plan"], results["summary"]
    machine = results["machine"]
    settings = results["settings"]
    lines = [
        f"# Webhook dispatch ({plan['mode']}, {results['when']})",
        "",
        f"`python -m bench --webhooks{' --quick' if plan['mode'] == 'quick' else ''}`: median of "
        f"{plan['runs']} round(s). A local receiver (aiohttp, its own process) answers 204 "
        "at once; "
        f"each dispatcher is `ledger webhooks run` in its own process with "
        f"`--concurrency {plan['in_flight_per_dispatcher']} --per-endpoint "
        f"{plan['in_flight_per_dispatcher']}`. Load average before/after: "
        f"{results['load']['before']} / {results['load']['after']}.",
        "",
        f"**Machine**: {machine.get('cores')} cores, {machine.get('cpu', '?')}, "
        f"{machine.get('memory_gb', '?')} GB; the server, the dispatchers, the receiver and the "
        "writers share it.  ",
        f"**Server**: PostgreSQL {settings.get('server_version')}, fsync={settings.get('fsync')}, "
        f"synchronous_commit={settings.get('synchronous_commit')}.",
        "",
        "## Throughput",
        "",
        f"{plan['events']:,} events written and relayed with the endpoint disabled; the clock "
        "runs from enabling it until the receiver has them all (fan-out, claims, signed POSTs, "
        f"recorded outcomes; poll interval {plan['throughput_poll']:g} s). Baseline: a bare "
        "aiohttp client posting as many signed bodies of the same size, with as many in flight "
        "as the dispatchers together, no database.",
        "",
        "| what | events/s | ratio | per round (events/s) |",
        "|---|---:|---:|---|",
    ]

    def per_round(key: str) -> str:
        return ", ".join(f"{r[key]['rate']:,.0f}" for r in results["rounds"])

    lines += [
        f"| bare client, {plan['in_flight_per_dispatcher']} in flight (baseline) | "
        f"{s['bare_one']:,.0f} | 1 | {per_round('bare_one')} |",
        f"| 1 dispatcher | {s['one']:,.0f} | {s['one_to_bare']:.2f} of the bare client | "
        f"{per_round('one')} |",
        f"| bare client, {4 * plan['in_flight_per_dispatcher']} in flight (baseline) | "
        f"{s['bare_four']:,.0f} | 1 | {per_round('bare_four')} |",
        f"| 4 dispatchers | {s['four']:,.0f} | {s['four_to_bare']:.2f} of the bare client, "
        f"{s['four_to_one']:.2f} x 1 dispatcher | {per_round('four')} |",
        "",
        "## Latency from commit to receipt",
        "",
        f"One writer posts {plan['latency_rate']} entries/s for {plan['latency_seconds']:g} s "
        "(one call each, autocommit) while one dispatcher runs; for each event, the time from "
        "post_entry's return to its arrival at the receiver (wall clock, one machine).",
        "",
        "| poll interval | p50 ms | p99 ms | max ms | mean ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for poll, figures in s["latency"].items():
        default = " (default)" if poll == "0.5" else ""
        lines.append(
            f"| {poll} s{default} | {figures['p50_ms']:.0f} | {figures['p99_ms']:.0f} | "
            f"{figures['max_ms']:.0f} | {figures['mean_ms']:.0f} |"
        )
    lines += [
        "",
        "An event waits for the dispatcher's next tick (half the poll interval on average, at "
        "most all of it), then one tick relays, fans out and claims it, and the POST goes out.",
        "",
    ]
    return "\n".join(lines)


def main(mode: str, runs: int, out: Path) -> int:
    quick = mode == "quick"
    plan = Plan(
        mode=mode,
        runs=runs,
        events=2_000 if quick else 20_000,
        latency_seconds=2.0 if quick else 15.0,
        out=out,
    )
    out.mkdir(parents=True, exist_ok=True)
    say(f"bench --webhooks ({mode}): {runs} round(s)")
    results = run(plan)
    shutil.rmtree(results.pop("work"), ignore_errors=True)
    name = "webhooks-quick" if quick else "webhooks"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(report(results), encoding="utf-8")
    say(f"wrote {out / (name + '.md')}")
    return 0
