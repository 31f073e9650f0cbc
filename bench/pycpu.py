"""`python -m bench.pycpu [--before DIR]`: the Python CPU of one call, the
wrapper's against raw psycopg running the same SQL, one thread.

``Ledger.post_entry`` / ``get_balance`` and ``conn.execute(same SQL).fetchone()``
on a dedicated connection (prepared after 5 executions, as the wrapper's
pool connections), interleaved in rounds; this process's CPU time per call
(``time.thread_time``): PostgreSQL's own time and other load stay out of
it. With ``--before DIR``, the ledger_py of another checkout beside this
one. A diagnostic for the wrapper's overhead (bench/results/http_profile.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench import dataset, pyload
from bench.http_ab import _load_package
from bench.server import start_server

OWNERS = 10_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from ledger_py import Ledger

    classes = {"after": Ledger}
    if args.before:
        classes["before"] = _load_package("ledger_py_before", args.before / "ledger_py").Ledger
    server = start_server()
    try:
        url = dataset.create_database(server.url(database="postgres"), "bench")
        dataset.prepare_ledger(url)
        run = uuid.uuid4().hex[:8]
        raw = psycopg.connect(url, autocommit=True)
        post_sql = pyload.post_entry_sql()
        balance_sql = "SELECT * FROM ledger.get_balance(owner_id => %(owner_id)s::text)"
        ledgers = {name: cls(url, min_size=1, max_size=1) for name, cls in classes.items()}
        for ledger in ledgers.values():
            ledger.open(wait=True)
        from ledger_py import queries

        balance_sql = queries.GET_BALANCE.sql({"owner_id": ""})

        def raw_post(i: int) -> Any:
            return raw.execute(
                post_sql,
                {
                    "owner_id": f"o{i % OWNERS + 1}",
                    "app": "bench",
                    "operation": "CREDIT_ADD",
                    "idempotency_key": f"r-{run}-{i}",
                    "amount": 1,
                },
            ).fetchone()

        def raw_balance(i: int) -> Any:
            return raw.execute(balance_sql, {"owner_id": f"o{i % OWNERS + 1}"}).fetchone()

        def wrapped(ledger: Any, name: str) -> tuple[Any, Any]:
            def post(i: int) -> Any:
                return ledger.post_entry(
                    owner_id=f"o{i % OWNERS + 1}",
                    app="bench",
                    operation="CREDIT_ADD",
                    idempotency_key=f"{name}-{run}-{i}",
                    amount=1,
                )

            def balance(i: int) -> Any:
                return ledger.get_balance(owner_id=f"o{i % OWNERS + 1}")

            return post, balance

        steps = {"raw post_entry": raw_post, "raw get_balance": raw_balance}
        for name, ledger in ledgers.items():
            post, balance = wrapped(ledger, name)
            steps[f"{name} Ledger.post_entry"] = post
            steps[f"{name} Ledger.get_balance"] = balance
        for step in steps.values():
            for i in range(10):
                step(10**8 + i)
        cpu: dict[str, list[float]] = {name: [] for name in steps}
        for r in range(args.rounds):
            for name, step in steps.items():
                start = time.thread_time()
                for i in range(args.calls):
                    step(r * args.calls + i)
                cpu[name].append((time.thread_time() - start) * 1e6 / args.calls)
        med = {name: statistics.median(v) for name, v in cpu.items()}
        print(f"thread CPU microseconds per call, median of {args.rounds} x {args.calls}:")
        for name, value in med.items():
            print(f"  {name:28} {value:7.1f}")
        for name in ledgers:
            for what in ("post_entry", "get_balance"):
                over = med[f"{name} Ledger.{what}"] - med[f"raw {what}"]
                print(f"  {name}: Ledger.{what} - raw = {over:6.1f} us")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
