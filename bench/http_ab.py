"""`python -m bench.http_ab --before DIR`: the HTTP and Python-wrapper ratios
of two versions of web/ and ledger_py/, side by side in one run.

DIR is a checkout of the other version (e.g. `git worktree add /tmp/before
<commit>`). One throwaway server and database (migrated by this checkout),
both versions' gunicorn running the production configuration
(web/gunicorn_conf.py of each), and in every round, back to back:

    SQL post_entry (pgbench, 8 clients)   POST /ledger before   POST /ledger after
    SQL get_balance (pgbench, 8 clients)  GET /balance before   GET /balance after
    raw psycopg post_entry (8 threads)    Ledger.post_entry before   after

Each ratio is taken within its round (HTTP / SQL, wrapper / raw) and the
medians over rounds are reported, with the load average, the worker CPU per
request (from /proc) and the exact command, in bench/results/http.{md,json}.

    python -m bench.http_ab --before /tmp/before [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import dataset, httpload, pgbench, pyload, scripts
from bench.measure import Sample
from bench.serve_ab import _cpu_seconds
from bench.server import load_average, machine_info, start_server

CLIENTS = 8
REPO = Path(__file__).resolve().parent.parent


def _load_package(name: str, path: Path) -> Any:
    """Import `path` (a package directory) under another name: the other
    version's ledger_py beside this one (its imports are relative)."""
    spec = importlib.util.spec_from_file_location(
        name, path / "__init__.py", submodule_search_locations=[str(path)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _commit(tree: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, type=Path, help="checkout of the baseline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    before_tree = args.before.resolve()
    before_ledger = _load_package("ledger_py_before", before_tree / "ledger_py").Ledger
    command = "python -m bench.http_ab " + " ".join(sys.argv[1:])
    load_start = load_average()
    server = start_server()
    servers: dict[str, httpload.Gunicorn] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        url = dataset.create_database(server.url(database="postgres"), "bench")
        dataset.prepare_ledger(url)
        target = pgbench.Target("127.0.0.1", server.settings["port"], "postgres", "bench")
        token = httpload.create_token(url)
        for name, tree in (("before", before_tree), ("after", REPO)):
            servers[name] = httpload.Gunicorn(url, repo=tree)
            httpload.probe(servers[name].base, token)
        time.sleep(1)

        def sql(script: str) -> Any:
            return lambda: (
                pgbench.run(
                    target, script=script, clients=CLIENTS, threads=2, seconds=args.seconds
                ),
                {},
            )

        def http(name: str, balance: bool) -> Any:
            def run() -> tuple[Sample, dict[str, Any]]:
                gunicorn = servers[name]
                cpu_before = _cpu_seconds(gunicorn.proc.pid)
                sample = httpload.run_wrk(
                    gunicorn.base,
                    token,
                    connections=CLIENTS,
                    threads=2,
                    seconds=args.seconds,
                    balance=balance,
                )
                cpu = _cpu_seconds(gunicorn.proc.pid)
                used = sum(cpu[p] - cpu_before.get(p, 0.0) for p in cpu)
                return sample, {
                    "worker_cpu_us_per_request": round(1e6 * used / max(1, sample.count))
                }

            return run

        def python(ledger_class: Any) -> Any:
            def run() -> tuple[Sample, dict[str, Any]]:
                if ledger_class is None:
                    sample, error = pyload.raw_psycopg(url, CLIENTS, args.seconds)
                else:
                    sample, error = pyload.wrapper_ledger(
                        url, CLIENTS, args.seconds, ledger_class=ledger_class
                    )
                if error:
                    raise RuntimeError(error)
                return sample, {}

            return run

        from ledger_py import Ledger as after_ledger

        order = {
            "sql_post_entry": sql(scripts.POST_ENTRY_UNIFORM),
            "http_post_before": http("before", False),
            "http_post_after": http("after", False),
            "sql_get_balance": sql(scripts.GET_BALANCE),
            "http_balance_before": http("before", True),
            "http_balance_after": http("after", True),
            "python_raw": python(None),
            "python_wrapper_before": python(before_ledger),
            "python_wrapper_after": python(after_ledger),
        }
        for r in range(args.rounds):
            for key, run in order.items():
                sample, extra = run()
                row = {
                    "rate": round(sample.rate, 1),
                    "p50_ms": sample.p50_ms,
                    "p99_ms": sample.p99_ms,
                    "errors": sample.errors,
                    "load": load_average(),
                }
                row.update(extra)
                runs.setdefault(key, []).append(row)
                print(
                    f"round {r + 1} {key:24} {sample.rate:9.1f}/s  p50 {sample.p50_ms} ms"
                    + (
                        f"  worker CPU {row['worker_cpu_us_per_request']} us/request"
                        if "worker_cpu_us_per_request" in row
                        else ""
                    )
                    + f"  errors {sample.errors}",
                    flush=True,
                )
    finally:
        for gunicorn in servers.values():
            gunicorn.stop()
        server.stop()
    load_end = load_average()

    def ratio(num: str, den: str) -> tuple[float, list[float]]:
        per_round = [a["rate"] / b["rate"] for a, b in zip(runs[num], runs[den], strict=True)]
        return statistics.median(per_round), per_round

    rows = [
        ("HTTP POST /ledger / SQL post_entry", "http_post_{}", "sql_post_entry", ">= 0.35"),
        ("HTTP GET /balance / SQL get_balance", "http_balance_{}", "sql_get_balance", "report"),
        (
            "ledger_py Ledger.post_entry / raw psycopg (8 threads)",
            "python_wrapper_{}",
            "python_raw",
            ">= 0.92",
        ),
    ]
    result: dict[str, Any] = {
        "command": command,
        "before": {"tree": str(before_tree), "commit": _commit(before_tree)},
        "after": {"tree": str(REPO), "commit": _commit(REPO)},
        "machine": machine_info(),
        "load_average": {"start": load_start, "end": load_end},
        "rounds": args.rounds,
        "seconds": args.seconds,
        "runs": runs,
        "ratios": [],
    }
    lines = [
        "# HTTP and Python-wrapper ratios, before and after, one run",
        "",
        f"`{command}` (before: {result['before']['commit']}, after: "
        f"{result['after']['commit']}); {args.rounds} rounds of {args.seconds:g} s, 8 clients"
        " (pgbench `-M prepared -j 2`; wrk `-t2 -c8`; 8 threads). Load average at the start"
        f" {load_start}, at the end {load_end}. Machine: {result['machine'].get('cores')} cores.",
        "",
        "| ratio | before | after | target | per round (before / after) |",
        "|---|---:|---:|---|---|",
    ]
    for title, num, den, target in rows:
        b, b_rounds = ratio(num.format("before"), den)
        a, a_rounds = ratio(num.format("after"), den)
        result["ratios"].append(
            {
                "title": title,
                "before": round(b, 3),
                "after": round(a, 3),
                "target": target,
                "before_per_round": [round(x, 3) for x in b_rounds],
                "after_per_round": [round(x, 3) for x in a_rounds],
            }
        )
        lines.append(
            f"| {title} | {b:.3f} | {a:.3f} | {target} | "
            + ", ".join(f"{x:.2f}" for x in b_rounds)
            + " / "
            + ", ".join(f"{x:.2f}" for x in a_rounds)
            + " |"
        )
    lines += [
        "",
        "| scenario | median rate /s | p50 ms | worker CPU us/request | per round |",
        "|---|---:|---:|---:|---|",
    ]
    for key, values in runs.items():
        rate = statistics.median(v["rate"] for v in values)
        p50 = statistics.median(v["p50_ms"] for v in values if v["p50_ms"] is not None)
        cpu = [v["worker_cpu_us_per_request"] for v in values if "worker_cpu_us_per_request" in v]
        lines.append(
            f"| `{key}` | {rate:,.1f} | {p50:.2f} | "
            f"{statistics.median(cpu) if cpu else '-'} | "
            + ", ".join(format(v["rate"], ",.0f") for v in values)
            + " |"
        )
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http.md").write_text(text)
    (args.out / "http.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
