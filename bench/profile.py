"""`python -m bench.profile [scenario ...]`: where a scenario's time goes.

Runs scenarios once on a server with pg_stat_statements tracking nested
statements (track=all: the statements inside PL/pgSQL functions too) and
prints, per scenario, the statements that took the most execution time.
A diagnostic beside the benchmark, never part of its figures (tracking
costs a little on every statement).
"""

from __future__ import annotations

import argparse
import time

import psycopg

from bench import dataset, pgbench, scripts
from bench.server import SERVER_SETTINGS
from ledger_cli.pgserver import throwaway_server

SCENARIOS = {
    "floor_uniform": (scripts.FLOOR_UNIFORM, 8),
    "floor_hot": (scripts.FLOOR_HOT, 8),
    "floor_grants_uniform": (scripts.FLOOR_GRANTS_UNIFORM, 8),
    "floor_grants_hot": (scripts.FLOOR_GRANTS_HOT, 8),
    "floor_full_uniform": (scripts.FLOOR_FULL_UNIFORM, 8),
    "floor_full_hot": (scripts.FLOOR_FULL_HOT, 8),
    "post_entry_uniform": (scripts.POST_ENTRY_UNIFORM, 8),
    "post_entry_hot": (scripts.POST_ENTRY_HOT, 8),
    "debit_never_expiring": (scripts.DEBIT_NEVER_EXPIRING, 8),
    "debit_expiring": (scripts.DEBIT_EXPIRING, 8),
    "transfer_uniform": (scripts.TRANSFER_UNIFORM, 8),
    "get_balance": (scripts.GET_BALANCE, 8),
    "post_entries_batch": (scripts.POST_ENTRIES_BATCH, 1),
}

TOP = """
SELECT calls, round((total_exec_time / calls * 1000)::numeric, 1) AS mean_us,
       round(total_exec_time::numeric, 1) AS total_ms,
       round((100 * total_exec_time / sum(total_exec_time) FILTER (WHERE toplevel)
              OVER ())::numeric, 1) AS pct_of_top,
       toplevel, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC
LIMIT %s
"""


FUNCTIONS = """
SELECT calls, round((total_time / calls * 1000)::numeric, 1) AS mean_us,
       round((self_time / calls * 1000)::numeric, 1) AS self_us,
       schemaname || '.' || funcname AS function
FROM pg_stat_user_functions WHERE calls > 0
ORDER BY self_time DESC
LIMIT %s
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=["floor_uniform", "post_entry_uniform"],
        help=f"some of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--clients", type=int, help="instead of each scenario's own count")
    args = parser.parse_args(argv)
    settings = dict(SERVER_SETTINGS, shared_preload_libraries="pg_stat_statements")
    settings["pg_stat_statements.track"] = "all"
    settings["track_functions"] = "all"
    server = throwaway_server(fsync=True, settings=settings)
    try:
        server_url = server.url(database="postgres")
        url = dataset.create_database(server_url, "bench")
        dataset.prepare_ledger(url)
        if any(name.startswith("debit_") for name in args.scenarios):
            dataset.prepare_grant_owners(url)
        dataset.prepare_floor(url)
        target = pgbench.Target("127.0.0.1", server.settings["port"], "postgres", "bench")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for name in args.scenarios:
                script, clients = SCENARIOS[name]
                clients = args.clients or clients
                conn.execute("SELECT pg_stat_statements_reset(), pg_stat_reset()")
                per_txn = scripts.BATCH_SIZE if name == "post_entries_batch" else 1
                sample = pgbench.run(
                    target,
                    script=script,
                    clients=clients,
                    threads=2,
                    seconds=args.seconds,
                    per_txn=per_txn,
                )
                print(
                    f"\n== {name}: {sample.rate:.0f}/s, p50 {sample.p50_ms:.2f} ms, "
                    f"p99 {sample.p99_ms:.2f} ms"
                )
                print(f"{'calls':>8} {'mean_us':>9} {'total_ms':>10} {'%top':>6}  query")
                for calls, mean_us, total_ms, pct, toplevel, query in conn.execute(
                    TOP, (args.top,)
                ):
                    mark = "" if toplevel else "  > "
                    print(f"{calls:>8} {mean_us:>9} {total_ms:>10} {pct or '':>6}  {mark}{query}")
                # Function statistics reach the view when the backends report them.
                time.sleep(1.0)
                conn.execute("SELECT pg_stat_clear_snapshot()")
                print(f"{'calls':>8} {'mean_us':>9} {'self_us':>9}  function (track_functions)")
                for calls, mean_us, self_us, function in conn.execute(FUNCTIONS, (args.top,)):
                    print(f"{calls:>8} {mean_us:>9} {self_us:>9}  {function}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
