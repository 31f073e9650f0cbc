"""What GET /metrics and the JSON request log cost POST /ledger, side by side
in one run: A = the web package of a baseline commit (before them; gunicorn's
own access log line per request, as that commit's configuration writes it),
B = this tree at LEDGER_LOG_LEVEL=info (a JSON line per request, and the
metrics), C = this tree at LEDGER_LOG_LEVEL=warning (the metrics, no request
line). Every stack serves the same database with web/gunicorn_conf.py's
settings (2 gevent workers x 4 threads); runs alternate (A, B, C, A, ...) so
that load from elsewhere hits all alike; medians and ratios to A are printed.

    python -m bench.monitoring_ab [--baseline REV] [--rounds 3] [--seconds 10]

With --in-process, the same comparison without HTTP, gunicorn or wrk: two
apps of this tree in one process on one Ledger (one pool), A with
web/monitoring.py's hooks and timing proxy taken out, B as served (the JSON
lines go to /dev/null), POST /ledger through Flask's test client in
alternating batches; it prints microseconds per request and the ratio B/A.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import dataset, httpload
from bench.serve_ab import _cpu_seconds
from bench.server import start_server


def _export(rev: str, into: Path) -> str:
    """The tree of `rev` (its web, ledger_py, sql, migrations) under `into`; its short hash."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev],
        cwd=httpload.REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = into / "tree.tar"
    subprocess.run(["git", "archive", "-o", str(archive), sha], cwd=httpload.REPO, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return sha


def _bare_app(ledger: Any) -> Any:
    """An app of this tree without web/monitoring.py: its hooks removed and
    the views given the Ledger itself instead of the timing proxy."""
    from web import create_app

    app = create_app({"LEDGER": ledger})
    for funcs in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        funcs[None] = [f for f in funcs.get(None, []) if f.__module__ != "web.monitoring"]
    state = app.extensions["ledger_web"]
    state.ledger = ledger
    state.keys._ledger = ledger
    return app


def in_process(url: str, token: str, rounds: int, batch: int) -> None:
    import logging

    from ledger_py import Ledger
    from web import create_app
    from web.monitoring import JsonFormatter, request_log

    with open(os.devnull, "w") as devnull, Ledger(url, max_size=2) as ledger:
        request_log.handlers.clear()
        sink = logging.StreamHandler(devnull)
        sink.setFormatter(JsonFormatter())
        request_log.addHandler(sink)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False
        apps = {
            "A without monitoring": _bare_app(ledger),
            "B with monitoring": create_app({"LEDGER": ledger}),
        }
        clients = {name: app.test_client() for name, app in apps.items()}
        per_request: dict[str, list[float]] = {name: [] for name in apps}
        cpu: dict[str, list[float]] = {name: [] for name in apps}
        counter = 0
        for round_ in range(rounds + 1):  # the first round warms up (statements prepared)
            for name, client in clients.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(batch):
                    counter += 1
                    response = client.post(
                        "/ledger",
                        json={
                            "owner_id": f"o{counter % 1000 + 1}",
                            "operation": "CREDIT_ADD",
                            "amount": 1,
                        },
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Idempotency-Key": f"ip-{counter}",
                        },
                    )
                    assert response.status_code == 201, response.json
                if round_:
                    per_request[name].append(1e6 * (time.perf_counter() - start) / batch)
                    cpu[name].append(1e6 * (time.process_time() - cpu_start) / batch)
                    print(
                        f"round {round_} {name}: {per_request[name][-1]:.0f} us per request,"
                        f" {cpu[name][-1]:.0f} us of this process's CPU",
                        flush=True,
                    )
        for label, figures in (("us per request", per_request), ("us of CPU per request", cpu)):
            medians = {name: statistics.median(v) for name, v in figures.items()}
            a, b = medians.values()
            for name, value in medians.items():
                print(f"median {name}: {value:.0f} {label}")
            print(f"{label}: B - A = {b - a:.0f}, ratio B/A = {b / a:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--baseline", default=None, help="commit of A (default: merge-base with main)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8, help="wrk -c (8 as `make bench`)")
    parser.add_argument("--in-process", action="store_true", help="Flask's test client, no HTTP")
    parser.add_argument("--batch", type=int, default=500, help="--in-process: requests per batch")
    args = parser.parse_args()
    if args.in_process:
        server = start_server()
        try:
            url = dataset.create_database(server.url(database="postgres"), "bench")
            dataset.prepare_ledger(url)
            in_process(url, httpload.create_token(url), args.rounds, args.batch)
        finally:
            server.stop()
        return
    baseline = (
        args.baseline
        or subprocess.run(
            ["git", "merge-base", "HEAD", "main"],
            cwd=httpload.REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        sha = _export(baseline, Path(tmp))
        stacks: dict[str, tuple[Path, dict[str, str]]] = {
            f"A baseline {sha}": (Path(tmp), {"LEDGER_LOG_LEVEL": "info"}),
            "B metrics + JSON request log": (httpload.REPO, {"LEDGER_LOG_LEVEL": "info"}),
            "C metrics, no request log": (httpload.REPO, {"LEDGER_LOG_LEVEL": "warning"}),
        }
        server = start_server()
        try:
            url = dataset.create_database(server.url(database="postgres"), "bench")
            dataset.prepare_ledger(url)
            token = httpload.create_token(url)
            rates: dict[str, list[float]] = {name: [] for name in stacks}
            cpu_ms: dict[str, list[float]] = {name: [] for name in stacks}
            for round_ in range(args.rounds):
                for name, (repo, env) in stacks.items():
                    gunicorn = httpload.Gunicorn(url, repo=repo, env_extra=env)
                    try:
                        httpload.probe(gunicorn.base, token)
                        time.sleep(1)  # every worker has booted
                        before = _cpu_seconds(gunicorn.proc.pid)
                        sample = httpload.run_wrk(
                            gunicorn.base,
                            token,
                            connections=args.connections,
                            threads=min(2, args.connections),
                            seconds=args.seconds,
                        )
                        after = _cpu_seconds(gunicorn.proc.pid)
                        cpu = sum(t - before.get(pid, 0.0) for pid, t in after.items())
                        lines = gunicorn.output().count("\n")
                    finally:
                        gunicorn.stop()
                    rates[name].append(sample.rate)
                    cpu_ms[name].append(1000 * cpu / sample.count)
                    print(
                        f"round {round_ + 1} {name}: {sample.rate:.0f} requests/s, "
                        f"{cpu_ms[name][-1]:.3f} ms of worker CPU per request, "
                        f"p99 {sample.p99_ms} ms, errors {sample.errors}, {lines} log lines",
                        flush=True,
                    )
        finally:
            server.stop()
    rate = {name: statistics.median(v) for name, v in rates.items()}
    cpu = {name: statistics.median(v) for name, v in cpu_ms.items()}
    a = next(iter(stacks))
    for name in stacks:
        print(
            f"median {name}: {rate[name]:.0f} requests/s ({rate[name] / rate[a]:.3f} of A), "
            f"{cpu[name]:.3f} ms of worker CPU per request ({cpu[name] / cpu[a]:.3f} of A)"
        )


if __name__ == "__main__":
    main()
