"""`python -m bench.serverloop`: server CPU per call, without clients.

Each measured statement runs N times inside one DO block on the server, one
COMMIT after each (synchronous_commit off for this session: the figure is
the statement's own work, not the WAL flush), with random owners and keys
like the pgbench scenarios. No network, no client, no other session: the
least noisy way to compare two versions of a function on a shared machine.
A diagnostic beside the benchmark, never part of its figures; pgbench under
8 clients amplifies these differences (cache misses, context switches).
"""

from __future__ import annotations

import argparse

import psycopg

from bench import dataset
from bench.server import start_server

STATEMENTS = {
    # The floor's statement itself, run by PL/pgSQL.
    "floor": (
        "WITH a AS (UPDATE floor.accounts SET balance = balance + 1, last_seq = last_seq + 1,"
        " updated_at = clock_timestamp() WHERE owner_id = o"
        " RETURNING owner_id, balance, last_seq, updated_at)"
        " INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance,"
        " idempotency_key, fingerprint, metadata, created_at, created_by)"
        " SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_ADD', 1, a.balance, k, md5(k)::uuid,"
        " '{}', a.updated_at, current_user FROM a"
    ),
    "floor_function": "SELECT * INTO x FROM floor.credit(o, k, 1)",
    "post_entry": "SELECT * INTO x FROM ledger.post_entry(o, 'bench', 'CREDIT_ADD', k, 1)",
    "post_entry_hot": (
        "SELECT * INTO x FROM ledger.post_entry('hot', 'bench', 'CREDIT_SPEND', k, 1)"
    ),
    "transfer": (
        "SELECT * INTO x FROM ledger.transfer(o,"
        " 'o' || (1 + (substr(o, 2)::int % 9999)), 1, 'bench', k)"
    ),
}

LOOP = """
DO $loop$
DECLARE t0 timestamptz; o text; k text; x record;
BEGIN
    t0 := clock_timestamp();
    FOR i IN 1..{calls} LOOP
        o := 'o' || (1 + (random() * 9999)::int);
        k := 'l' || (random() * 9e18)::bigint;
        {statement};
        COMMIT;
    END LOOP;
    RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - t0) * 1e6 / {calls};
END
$loop$
"""


def per_call_us(conn: psycopg.Connection[object], statement: str, calls: int) -> float:
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute(LOOP.format(calls=calls, statement=statement))
    return float(notices[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serverloop", description=__doc__)
    parser.add_argument("statements", nargs="*", default=["floor", "floor_function", "post_entry"])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    server = start_server()
    try:
        url = dataset.create_database(server.url(database="postgres"), "bench")
        dataset.prepare_ledger(url)
        dataset.prepare_floor(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            print(f"us per call, {args.calls} calls a round, one COMMIT each")
            for round_no in range(1, args.rounds + 1):
                cells = [
                    f"{name} {per_call_us(conn, STATEMENTS[name], args.calls):.1f}"
                    for name in args.statements
                ]
                print(f"round {round_no}: " + "  ".join(cells))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
