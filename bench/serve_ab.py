"""POST /ledger requests/s of two gunicorn worker classes, side by side in one run:
A = gthread (2 workers x 4 threads, the previous serving stack, given on the
command line over web/gunicorn_conf.py), B = web/gunicorn_conf.py as it is.
Runs alternate (A, B, A, B, ...) so that load from elsewhere hits both alike;
medians and their ratio B/A are printed.

    python -m bench.serve_ab [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench import dataset, httpload
from bench.server import start_server

STACKS = {
    "A gthread 2x4": ("--worker-class", "gthread", "--threads", str(httpload.THREADS_PER_WORKER)),
    "B web/gunicorn_conf.py": (),
}


def _cpu_seconds(master_pid: int) -> dict[str, float]:
    """User + system CPU time of each of the master's children (the workers) so far."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    times = {}
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        times[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8, help="wrk -c (8 as `make bench`)")
    args = parser.parse_args()
    server = start_server()
    try:
        url = dataset.create_database(server.url(database="postgres"), "bench")
        dataset.prepare_ledger(url)
        token = httpload.create_token(url)
        rates: dict[str, list[float]] = {name: [] for name in STACKS}
        cpu_ms: dict[str, list[float]] = {name: [] for name in STACKS}
        for round_ in range(args.rounds):
            for name, extra in STACKS.items():
                gunicorn = httpload.Gunicorn(url, extra_args=extra)
                try:
                    httpload.probe(gunicorn.base, token)
                    time.sleep(1)  # every worker has booted
                    cpu_before = _cpu_seconds(gunicorn.proc.pid)
                    sample = httpload.run_wrk(
                        gunicorn.base,
                        token,
                        connections=args.connections,
                        threads=min(2, args.connections),
                        seconds=args.seconds,
                    )
                    per_worker = [
                        after - cpu_before.get(pid, 0.0)
                        for pid, after in _cpu_seconds(gunicorn.proc.pid).items()
                    ]
                    cpu = sum(per_worker)
                finally:
                    gunicorn.stop()
                rate = sample.rate
                rates[name].append(rate)
                cpu_ms[name].append(1000 * cpu / sample.count)
                print(
                    f"round {round_ + 1} {name}: {rate:.0f} requests/s, "
                    f"{cpu_ms[name][-1]:.2f} ms of worker CPU per request "
                    f"(per worker: {', '.join(f'{t:.1f}' for t in per_worker)} s) "
                    f"(p99 {sample.p99_ms} ms, errors {sample.errors})",
                    flush=True,
                )
        medians = {name: statistics.median(values) for name, values in rates.items()}
        for name, value in medians.items():
            print(f"median {name}: {value:.0f} requests/s")
        a, b = list(medians.values())[:2]
        print(f"ratio B/A requests/s: {b / a:.3f}")
        cpu = {name: statistics.median(values) for name, values in cpu_ms.items()}
        for name, value in cpu.items():
            print(f"median {name}: {value:.2f} ms of worker CPU per request")
        ca, cb = list(cpu.values())[:2]
        print(f"ratio B/A worker CPU per request: {cb / ca:.3f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
