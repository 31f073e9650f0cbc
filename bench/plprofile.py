"""`python -m bench.plprofile STATEMENT [FUNCTION...]`: a call's time, statement by statement.

Runs a bench.serverloop statement (its name, or any PL/pgSQL statement
using the loop's variables o and k) 3,000 times on a throwaway server with
the bench data, under plpgsql_check's profiler, and prints the time of each
PL/pgSQL function per outer call, then, for each FUNCTION given (its
regprocedure, e.g. 'ledger._spend(text,bigint,bigint,bigint,timestamptz)'),
the time of each of its statements. Wall time, inflated by the profiler and
by other load: compare shares, not absolute figures. Needs the plpgsql_check
extension (Debian: postgresql-15-plpgsql-check).
"""

from __future__ import annotations

import argparse

import psycopg

from bench import dataset
from bench.server import start_server
from bench.serverloop import LOOP, STATEMENTS

FUNCTIONS = """
SELECT funcoid::regprocedure::text, exec_count, round((total_time * 1000 / %(calls)s)::numeric, 1)
FROM plpgsql_profiler_functions_all() ORDER BY total_time DESC LIMIT 25
"""
STATEMENTS_OF = """
SELECT lineno, exec_stmts, round((total_time * 1000 / %(calls)s)::numeric, 1),
       left(regexp_replace(source, '\\s+', ' ', 'g'), 100)
FROM plpgsql_profiler_function_tb(%(function)s::regprocedure)
WHERE exec_stmts > 0 ORDER BY lineno
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plprofile", description=__doc__)
    parser.add_argument("statement")
    parser.add_argument("functions", nargs="*")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    statement = STATEMENTS.get(args.statement, args.statement)
    server = start_server()
    try:
        url = dataset.create_database(server.url(database="postgres"), "bench")
        dataset.prepare_ledger(url)
        dataset.prepare_grant_owners(url)
        dataset.prepare_floor(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
            conn.execute("SET synchronous_commit = off")
            conn.execute(LOOP.format(calls=500, statement=statement))  # warm up
            conn.execute("SELECT plpgsql_profiler_reset_all()")
            conn.execute("SET plpgsql_check.profiler = on")
            conn.execute(LOOP.format(calls=args.calls, statement=statement))
            conn.execute("SET plpgsql_check.profiler = off")
            params = {"calls": args.calls}
            print("function | calls | us per outer call")
            for row in conn.execute(FUNCTIONS, params).fetchall():
                print(" | ".join(str(v) for v in row))
            for function in args.functions:
                print(f"\n{function}: line | runs | us per outer call | statement")
                for row in conn.execute(STATEMENTS_OF, {**params, "function": function}):
                    print(" | ".join(str(v) for v in row))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
