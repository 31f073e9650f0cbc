"""`python -m bench.serverloop`: server time per call, without clients.

Each measured statement runs N times inside one DO block on the server, one
COMMIT after each (synchronous_commit off for this session: the figure is
the statement's own work, not the WAL flush), with random owners and keys
like the pgbench scenarios. No network, no client, no other session: the
least noisy way to compare two versions of a function on a shared machine.
Beside the wall time, the backend's own CPU time per call (from
/proc/<pid>/schedstat, when the server runs on this machine and its
processes are readable): other load on the machine inflates the wall time,
much less the CPU time. Rounds interleave the statements; the last lines
are the medians. A diagnostic beside the benchmark, never part of its
figures; pgbench under 8 clients amplifies these differences (cache misses,
context switches, the time a row lock is held).
"""

from __future__ import annotations

import argparse
import statistics

import psycopg

from bench import dataset, scripts
from bench.server import start_server


def _from_script(script: str) -> str:
    """A pgbench script's statement for the loop below: its variables become
    the loop's (o, k), its \\set lines and its RETURNING go."""
    lines = [line for line in script.splitlines() if not line.startswith("\\")]
    text = " ".join(line.strip() for line in lines).rstrip(";")
    text = text.replace("'o' || :owner", "o").replace("'k' || :key", "k")
    return text.removesuffix(" RETURNING entry_id")


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
    # The grants floor's credit: the floor's statement plus the grant row.
    "floor_grants": (
        "WITH a AS (UPDATE floor.accounts SET balance = balance + 1, last_seq = last_seq + 1,"
        " updated_at = clock_timestamp() WHERE owner_id = o"
        " RETURNING owner_id, balance, last_seq, updated_at),"
        " e AS (INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance,"
        " idempotency_key, fingerprint, metadata, created_at, created_by)"
        " SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_ADD', 1, a.balance, k, md5(k)::uuid,"
        " '{}', a.updated_at, current_user FROM a RETURNING owner_id, entry_id, seq, amount,"
        " created_at)"
        " INSERT INTO floor.grants (owner_id, entry_id, seq, app, operation, amount, remaining,"
        " priority, expires_at, created_at)"
        " SELECT e.owner_id, e.entry_id, e.seq, 'bench', 'CREDIT_ADD', e.amount, e.amount, 50,"
        " NULL, e.created_at FROM e"
    ),
    # A debit of the hot owner, bare and with its grant rows (one session:
    # the work per call, without the contention of the pgbench scenario).
    "floor_hot": (
        "WITH a AS (UPDATE floor.accounts SET balance = balance - 1, last_seq = last_seq + 1,"
        " updated_at = clock_timestamp() WHERE owner_id = 'hot' AND balance >= 1"
        " RETURNING owner_id, balance, last_seq, updated_at)"
        " INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance,"
        " idempotency_key, fingerprint, metadata, created_at, created_by)"
        " SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_SPEND', -1, a.balance, k, md5(k)::uuid,"
        " '{}', a.updated_at, current_user FROM a"
    ),
    "floor_grants_hot": (
        "WITH a AS (UPDATE floor.accounts SET balance = balance - 1, last_seq = last_seq + 1,"
        " updated_at = clock_timestamp() WHERE owner_id = 'hot' AND balance >= 1"
        " RETURNING owner_id, balance, last_seq, updated_at),"
        " e AS (INSERT INTO floor.entries (owner_id, seq, app, operation, amount, balance,"
        " idempotency_key, fingerprint, metadata, created_at, created_by)"
        " SELECT a.owner_id, a.last_seq, 'bench', 'CREDIT_SPEND', -1, a.balance, k, md5(k)::uuid,"
        " '{}', a.updated_at, current_user FROM a RETURNING owner_id, entry_id, seq),"
        " g AS (UPDATE floor.grants g SET remaining = g.remaining - 1 FROM e"
        " WHERE g.owner_id = e.owner_id AND g.grant_id = (SELECT y.grant_id FROM floor.grants y"
        " WHERE y.owner_id = 'hot' AND y.status = 'active' AND y.remaining > 0"
        " ORDER BY y.priority, y.expires_at, y.seq, y.grant_id LIMIT 1)"
        " RETURNING g.owner_id, g.grant_id)"
        " INSERT INTO floor.grant_spending (owner_id, entry_id, grant_id, seq, amount)"
        " SELECT e.owner_id, e.entry_id, g.grant_id, e.seq, -1 FROM e JOIN g USING (owner_id)"
    ),
    # The full floor: the grants floor's rows plus the entry.posted event row.
    "floor_full": _from_script(scripts.FLOOR_FULL_UNIFORM),
    "floor_full_hot": _from_script(scripts.FLOOR_FULL_HOT),
    "floor_function": "SELECT * INTO x FROM floor.credit(o, k, 1)",
    "post_entry": "SELECT * INTO x FROM ledger.post_entry(o, 'bench', 'CREDIT_ADD', k, 1)",
    "post_entry_hot": (
        "SELECT * INTO x FROM ledger.post_entry('hot', 'bench', 'CREDIT_SPEND', k, 1)"
    ),
    # The pair of debits over grants (owners e1.. and n1.., bench/dataset.py).
    "debit_expiring": (
        "SELECT * INTO x FROM ledger.post_entry('e' || substr(o, 2), 'bench', 'CREDIT_SPEND', k, 1)"
    ),
    "debit_never_expiring": (
        "SELECT * INTO x FROM ledger.post_entry('n' || substr(o, 2), 'bench', 'CREDIT_SPEND', k, 1)"
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
    """Wall time per call, measured inside the DO block, in microseconds."""
    return measure(conn, statement, calls)[0]


def _backend_cpu_ns(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def measure(
    conn: psycopg.Connection[object], statement: str, calls: int
) -> tuple[float, float | None]:
    """(wall us, backend CPU us or None) per call of `statement`."""
    notices: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        notices.append(diag.message_primary or "")

    pid = conn.info.backend_pid
    conn.add_notice_handler(keep)
    try:
        before = _backend_cpu_ns(pid)
        conn.execute(LOOP.format(calls=calls, statement=statement))
        after = _backend_cpu_ns(pid)
    finally:
        conn.remove_notice_handler(keep)
    cpu = (after - before) / 1000.0 / calls if before is not None and after is not None else None
    return float(notices[-1]), cpu


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
        if any(name.startswith("debit_") for name in args.statements):
            dataset.prepare_grant_owners(url)
        dataset.prepare_floor(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            print(f"us per call, {args.calls} calls a round, one COMMIT each")
            walls: dict[str, list[float]] = {name: [] for name in args.statements}
            cpus: dict[str, list[float]] = {name: [] for name in args.statements}
            for round_no in range(1, args.rounds + 1):
                for name in args.statements:
                    wall, cpu = measure(conn, STATEMENTS[name], args.calls)
                    walls[name].append(wall)
                    if cpu is not None:
                        cpus[name].append(cpu)
                print(f"round {round_no}: " + _cells(walls, -1))
                if all(cpus.values()):
                    print(f"round {round_no} cpu: " + _cells(cpus, -1))
            print("median wall: " + _cells(walls, None))
            if all(cpus.values()):
                print("median cpu: " + _cells(cpus, None))
    finally:
        server.stop()
    return 0


def _cells(values: dict[str, list[float]], index: int | None) -> str:
    """`name value` per statement: one round's figure, or the median."""
    return "  ".join(
        f"{name} {(v[index] if index is not None else statistics.median(v)):.1f}"
        for name, v in values.items()
    )


if __name__ == "__main__":
    raise SystemExit(main())
