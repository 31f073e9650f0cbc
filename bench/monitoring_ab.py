"""What GET /metrics and the JSON request log cost POST /ledger, side by side
in one run: A = the web package of a baseline commit (before them; gunicorn's
own access log line per request, as that commit's configuration writes it),
B = this tree at LEDGER_LOG_LEVEL=info (a JSON line per request, and the
metrics), C = this tree at LEDGER_LOG_LEVEL=warning (the metrics, no request
line). Every stack serves the same database with web/gunicorn_conf.py's
settings (2 gevent workers x 4 threads); runs alternate (A, B, C, A, ...) so
that load from elsewhere hits all alike; medians and ratios to A are printed.

    python -m bench.monitoring_ab [--baseline REV] [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--baseline", default=None, help="commit of A (default: merge-base with main)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8, help="wrk -c (8 as `make bench`)")
    args = parser.parse_args()
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
