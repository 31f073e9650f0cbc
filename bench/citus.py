"""`python -m bench --citus` (or `--citus-url URL`): the ledger on a Citus
cluster, each call as a ratio to the same call on one plain PostgreSQL server
measured in the same run.

Both sides get the same data set (the ledger migrated, owners o1..o10000
and `hot` funded through ledger.post_entry, the same pairs of owners for
transfers), the same pgbench settings (`-M prepared`, 8 clients, `-j 2`) and
durable commits (fsync and synchronous_commit on, on every node). Each round
runs every scenario on the plain server, then right after on the cluster;
a ratio is the median of the ratios within each round, as in the main
benchmark. Beside each run, the WAL bytes and WAL flushes (`pg_stat_wal`)
each node wrote per call: what commits a call pays, node by node.

`--citus` starts the tests' local cluster (a coordinator and two workers on
this machine, tests/citus/cluster.py, started with durable settings);
`--citus-url` takes the superuser URL of a running coordinator whose workers
accept the same user, and makes a database `ledger_bench` on every node.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from bench import pgbench
from bench.dataset import FUNDING, HOT_FUNDING_CALLS, create_database
from bench.measure import Sample, median_of
from bench.scenarios import CLIENTS, PGBENCH_THREADS
from bench.scripts import OWNERS, POST_ENTRY_UNIFORM
from bench.server import (
    SERVER_SETTINGS,
    load_average,
    machine_info,
    server_settings,
    start_server,
)
from ledger_py.migrate import migrate

# The one import of the tests' cluster harness: if it moves, only this line changes.
from tests.citus import cluster as harness

DATABASE = "ledger_bench"
PAIRS = 10_000  # owner pairs, one on each of two workers, for the transfers

# The cluster's nodes run with the plain benchmark server's settings, durable:
# the harness's own defaults (fsync off, for the tests) are overridden.
CLUSTER_SETTINGS = {
    **SERVER_SETTINGS,
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}
NODE_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "max_wal_size",
    "max_prepared_transactions",
    "server_version",
)

POST_ENTRY_IN_TRANSACTION = (
    POST_ENTRY_UNIFORM.replace("SELECT * FROM", "BEGIN;\nSELECT * FROM", 1) + "COMMIT;\n"
)
TRANSFER_ACROSS_WORKERS = (
    f"\\set i random(1, {PAIRS})\n"
    "\\set key random(1, 9000000000000000000)\n"
    "SELECT t.* FROM bench_pairs p,"
    " LATERAL ledger.transfer(p.a, p.b, 1, 'bench', 't' || :key) t WHERE p.i = :i;\n"
)


@dataclass(frozen=True)
class CitusScenario:
    key: str
    title: str
    script: str
    why: str  # the reason for the ratio: what hops and commits each call pays


SCENARIOS = (
    CitusScenario(
        "post_entry_delegated",
        "ledger.post_entry credit, uniform over 10,000 owners, outside a transaction block",
        POST_ENTRY_UNIFORM,
        "Delegated: the coordinator runs the entry point ledger.post_entry (the owner "
        "checked, the writer read), and Citus sends the call of ledger_shard.post_entry "
        "whole to the owner's worker in a remote transaction (BEGIN with a distributed "
        "transaction id, the call, COMMIT: three round trips on one connection, one more "
        "backend per call); the worker runs the function and commits: one WAL flush, as on "
        "the plain server; the coordinator writes nothing. Every statement of the function "
        "runs on that worker's own shards (Citus's local execution): the worker opens no "
        "connection of its own (tests/citus/test_distribute.py). While _apply wrote the "
        "account, the entry and its event in one statement of data-modifying CTEs, Citus "
        "copied the CTEs' intermediate results to every node, and each call committed on all "
        "three with two-phase commit (0.036 of plain, docs/CITUS.md). The rest of the distance "
        "is the hop and the coordinator's work, where the plain server runs the function "
        "alone. On one 2-core machine the hop, the "
        "coordinator's CPU and the three servers share the same two cores.",
    ),
    CitusScenario(
        "post_entry_in_transaction",
        "BEGIN; ledger.post_entry (uniform); COMMIT",
        POST_ENTRY_IN_TRANSACTION,
        "Delegated too (force_delegation): the coordinator runs the entry point, and the "
        "call of ledger_shard.post_entry goes whole to the owner's worker inside the "
        "caller's distributed transaction (BEGIN with a distributed transaction id, the "
        "call); COMMIT is a one-phase commit on that worker, the only node written: one WAL "
        "flush there, none on the coordinator (see the flushes per call), where a function "
        "run on the coordinator would cost a round trip per statement and a two-phase "
        "commit.",
    ),
    CitusScenario(
        "transfer_across_workers",
        "ledger.transfer between two owners on different workers (both directions)",
        TRANSFER_ACROSS_WORKERS,
        "A distributed transaction: the coordinator runs transfer, locks the two owners "
        "in order (one on each worker), writes an entry on each, every statement a round "
        "trip, then commits with two-phase commit: PREPARE TRANSACTION on both workers, "
        "the commit record on the coordinator, COMMIT PREPARED on both, each a WAL flush.",
    ),
)


@dataclass
class Side:
    """One side of the comparison: the plain server or the cluster."""

    name: str  # plain | citus
    url: str  # superuser URL of the benchmark database (the coordinator's on Citus)
    target: pgbench.Target
    node_urls: dict[str, str]  # node name -> superuser URL of the benchmark database
    settings: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Result:
    scenario: CitusScenario
    runs: dict[str, list[Sample]] = field(default_factory=lambda: {"plain": [], "citus": []})
    wal: dict[str, list[dict[str, dict[str, float]]]] = field(
        default_factory=lambda: {"plain": [], "citus": []}
    )
    error: str | None = None


def say(text: str) -> None:
    print(text, flush=True)


def _target(url: str) -> pgbench.Target:
    parts = urlsplit(url)
    return pgbench.Target(
        parts.hostname or "127.0.0.1",
        parts.port or 5432,
        parts.username or "postgres",
        parts.path.lstrip("/"),
    )


def _with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


def node_settings(url: str) -> dict[str, str]:
    """The settings printed beside the figures, of one node (or the plain server)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
            (list(NODE_SETTINGS),),
        ).fetchall()
    settings = {}
    for name, setting, unit in rows:
        settings[name] = (
            f"{int(setting) * 8 // 1024}MB" if unit == "8kB" and setting.isdigit() else setting
        )
        if unit == "MB":
            settings[name] = f"{setting}MB"
    if settings.get("fsync") != "on" or settings.get("synchronous_commit") != "on":
        raise RuntimeError(f"{url}: not durable (fsync and synchronous_commit must be on)")
    return settings


def wal_counters(url: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT wal_bytes::bigint, wal_sync FROM pg_stat_wal").fetchone()
    assert row is not None
    return {"wal_bytes": float(row[0]), "wal_syncs": float(row[1])}


def fund(url: str, threads: int = CLIENTS) -> None:
    """Register the app `bench` and fund o1..o10000 and `hot` through
    ledger.post_entry, one call per statement from `threads` connections (on
    Citus each call is delegated to the owner's worker: seconds, where one
    statement funding every owner runs each call on the coordinator)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT ledger.define_app('bench', 'benchmarks')")
    calls = [(f"o{g}", f"fund-{g}") for g in range(1, OWNERS + 1)]
    calls += [("hot", f"fund-hot-{g}") for g in range(1, HOT_FUNDING_CALLS + 1)]
    errors: list[BaseException] = []

    def work(part: list[tuple[str, str]]) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for owner, key in part:
                    conn.execute(
                        "SELECT * FROM ledger.post_entry(%s, 'bench', 'CREDIT_ADD', %s, %s)",
                        (owner, key, FUNDING),
                        prepare=True,
                    )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(calls[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE ledger.accounts, ledger.entries")


def owners_by_worker(coordinator_url: str) -> dict[str, list[str]]:
    """Which worker (host:port) holds each owner o1..o10000."""
    with psycopg.connect(coordinator_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT 'o' || g, n.nodename || ':' || n.nodeport"
            " FROM generate_series(1, %s) g"
            " JOIN pg_dist_placement p"
            "   ON p.shardid = get_shard_id_for_distribution_column('ledger.accounts', 'o' || g)"
            " JOIN pg_dist_node n ON n.groupid = p.groupid",
            (OWNERS,),
        ).fetchall()
    placed: dict[str, list[str]] = {}
    for owner, node in rows:
        placed.setdefault(node, []).append(owner)
    return placed


def make_pairs(placed: dict[str, list[str]]) -> list[tuple[int, str, str]]:
    """PAIRS (i, sender, receiver) on two different workers, half each way."""
    nodes = sorted(placed)
    if len(nodes) < 2:
        raise RuntimeError(f"the cluster needs two workers holding owners, found {nodes}")
    first, second = placed[nodes[0]], placed[nodes[1]]
    rng = random.Random(14)
    pairs = []
    for i in range(1, PAIRS + 1):
        a, b = rng.choice(first), rng.choice(second)
        pairs.append((i, a, b) if i % 2 else (i, b, a))
    return pairs


def store_pairs(url: str, pairs: list[tuple[int, str, str]]) -> None:
    """bench_pairs: a plain table (on Citus, local to the coordinator, read there)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_pairs (i integer PRIMARY KEY, a text NOT NULL, b text NOT NULL)"
        )
        with conn.cursor() as cur, cur.copy("COPY bench_pairs (i, a, b) FROM STDIN") as copy:
            for row in pairs:
                copy.write_row(row)
        conn.execute("VACUUM ANALYZE bench_pairs")


def routing(url: str) -> dict[str, str]:
    """What the coordinator sends the workers for one post_entry, outside and
    inside a transaction block (citus.log_remote_commands): each command's
    start and the node it went to."""
    call = "SELECT * FROM ledger.post_entry('o1', 'bench', 'CREDIT_ADD', %s, 1)"

    def sent(conn: psycopg.Connection[Any], key: str, block: bool) -> str:
        commands: list[str] = []

        def note(notice: psycopg.errors.Diagnostic) -> None:
            text = notice.message_primary or ""
            if text.startswith("issuing "):
                where = (notice.message_detail or "").split("@")[-1].split(" ")[0]
                command = text[len("issuing ") :]
                if " FROM " in command:  # the call itself: the function it names
                    function = command.split(" FROM ", 1)[1].split("(")[0]
                    command = f"SELECT ... FROM {function}(...)"
                commands.append(f"{command.split(';')[0][:60]} -> {where}")

        conn.add_notice_handler(note)
        conn.execute("SET citus.log_remote_commands = on")
        if block:
            with conn.transaction():
                conn.execute(call, (key,))
        else:
            conn.execute(call, (key,))
        conn.execute("RESET citus.log_remote_commands")
        conn.remove_notice_handler(note)
        return "; ".join(commands)

    with psycopg.connect(url, autocommit=True) as conn:
        outside = sent(conn, "routing-outside", False)
        inside = sent(conn, "routing-inside", True)
    return {"outside a transaction block": outside, "inside BEGIN ... COMMIT": inside}


def run_rounds(sides: list[Side], results: list[Result], runs: int, seconds: float) -> None:
    for r in range(runs):
        for res in results:
            if res.error:
                continue
            for side in sides:
                before = {n: wal_counters(u) for n, u in side.node_urls.items()}
                try:
                    sample = pgbench.run(
                        side.target,
                        script=res.scenario.script,
                        clients=CLIENTS,
                        threads=PGBENCH_THREADS,
                        seconds=seconds,
                    )
                except Exception as exc:
                    res.error = f"{side.name}: {type(exc).__name__}: {exc}"
                    say(f"  {res.scenario.key:28} ERROR {res.error}")
                    traceback.print_exc()
                    break
                time.sleep(0.3)  # backends that just ended report their WAL statistics
                after = {n: wal_counters(u) for n, u in side.node_urls.items()}
                calls = max(sample.count, 1)
                res.wal[side.name].append(
                    {
                        n: {
                            k: round((after[n][k] - before[n][k]) / calls, 2)
                            for k in ("wal_bytes", "wal_syncs")
                        }
                        for n in side.node_urls
                    }
                )
                res.runs[side.name].append(sample)
                errors = f"  errors {sample.errors}" if sample.errors else ""
                say(
                    f"  run {r + 1}/{runs} {res.scenario.key:26} {side.name:5}"
                    f" {sample.rate:9.1f} txn/s  p50 {sample.p50_ms or 0:6.2f} ms"
                    f"  p99 {sample.p99_ms or 0:6.2f} ms{errors}"
                )


def build(
    plan: dict[str, Any],
    sides: list[Side],
    results: list[Result],
    extra: dict[str, Any],
) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    for res in results:
        plain, citus = res.runs["plain"], res.runs["citus"]
        per_round = [
            round(c.rate / p.rate, 3) for p, c in zip(plain, citus, strict=False) if p.rate > 0
        ]
        entry: dict[str, Any] = {
            "title": res.scenario.title,
            "status": "error" if res.error else "ok" if per_round else "not run",
            "error": res.error,
            "ratio": round(statistics.median(per_round), 3) if per_round else None,
            "per_round": per_round,
            "why": res.scenario.why,
            "script": res.scenario.script,
        }
        for name, samples in res.runs.items():
            med = median_of(samples) if samples else {"rate": None, "p50_ms": None, "p99_ms": None}
            wal: dict[str, dict[str, float]] = {}
            for node in res.wal[name][0] if res.wal[name] else {}:
                wal[node] = {
                    k: round(statistics.median(w[node][k] for w in res.wal[name]), 2)
                    for k in ("wal_bytes", "wal_syncs")
                }
            entry[name] = {
                "rate": round(med["rate"], 1) if med["rate"] is not None else None,
                "p50_ms": med["p50_ms"],
                "p99_ms": med["p99_ms"],
                "runs": [s.as_dict() for s in samples],
                "errors": sum(s.errors for s in samples),
                "wal_per_call": wal,
            }
        scenarios[res.scenario.key] = entry
    return {
        "schema_version": 1,
        **extra,
        "plan": plan,
        "settings": {side.name: side.settings for side in sides},
        "scenarios": scenarios,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    plan, machine = results["plan"], results["machine"]
    settings = results["settings"]
    lines = [
        f"# Ledger on Citus / one plain PostgreSQL ({plan['mode']}, "
        f"{results.get('generated_at', '')})",
        "",
        f"{plan['cluster']}. Median of {plan['runs']} round(s) of {plan['seconds_per_run']:g} s "
        f"per scenario and side, plain then Citus within each round; pgbench `-M prepared "
        f"-c {plan['clients']} -j {plan['pgbench_threads']}`, as the main benchmark. "
        f"Load average before/after: {results.get('load_average_before')} / "
        f"{results.get('load_average_after')}.",
        "",
        f"**Machine**: {machine.get('cores')} cores, {machine.get('cpu', '?')}, "
        f"{machine.get('memory_gb', '?')} GB.  ",
        f"**Data**: {plan['data']}.",
        "",
        "**Settings** (each node, and the plain server):",
        "",
    ]
    for side, nodes in settings.items():
        for node, values in nodes.items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            lines.append(f"- {side} {node}: {shown}")
    lines += [
        "",
        "## Ratios",
        "",
        "A ratio is Citus calls/s over plain calls/s, the median of the ratios within each round.",
        "",
        "| call | Citus / plain | per round | plain txn/s | Citus txn/s | why |",
        "|---|---:|---|---:|---:|---|",
    ]
    for key, sc in results["scenarios"].items():
        rounds = ", ".join(f"{x:.2f}" for x in sc["per_round"])
        why = sc["why"] if not sc["error"] else f"ERROR {sc['error']}"
        lines.append(
            f"| `{key}`: {sc['title']} | {_fmt(sc['ratio'], 3)} | {rounds} | "
            f"{_fmt(sc['plain']['rate'], 0)} | {_fmt(sc['citus']['rate'], 0)} | {why} |"
        )
    lines += [
        "",
        "## Latency and WAL per call, node by node",
        "",
        "WAL bytes and WAL flushes (`pg_stat_wal.wal_sync`) each node wrote per call, "
        "median over rounds: where the commits happen.",
        "",
        "| call | side | p50 ms | p99 ms | runs (txn/s) | WAL B/call by node | "
        "WAL flushes/call by node |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for key, sc in results["scenarios"].items():
        for side in ("plain", "citus"):
            s = sc[side]
            wal = s["wal_per_call"]
            runs = ", ".join(_fmt(r["rate"], 0) for r in s["runs"])
            lines.append(
                f"| `{key}` | {side} | {_fmt(s['p50_ms'])} | {_fmt(s['p99_ms'])} | {runs} | "
                + ", ".join(f"{n} {_fmt(v['wal_bytes'], 0)}" for n, v in wal.items())
                + " | "
                + ", ".join(f"{n} {_fmt(v['wal_syncs'])}" for n, v in wal.items())
                + " |"
            )
    if results.get("routing"):
        lines += [
            "",
            "## What the coordinator sends the workers for one post_entry",
            "",
            "citus.log_remote_commands during one call (the commands, and the node each went to):",
            "",
        ]
        for where, text in results["routing"].items():
            lines.append(f"- {where}: `{text}`")
    lines += [
        "",
        "On one 2-core machine the three nodes and pgbench share the same cores: the "
        "cluster can only add hops and commits here. Figures of one machine at one "
        "moment: compare ratios, not absolute numbers.",
    ]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(results), encoding="utf-8")
    return [json_path, md_path]


def _prepare(side: Side, pairs: Callable[[], list[tuple[int, str, str]]]) -> None:
    started = time.monotonic()
    migrate(side.url)
    fund(side.url)
    store_pairs(side.url, pairs())
    with psycopg.connect(side.url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    say(f"  {side.name}: migrated and funded in {time.monotonic() - started:.1f} s")


def main(
    *,
    mode: str,
    runs: int,
    seconds: float,
    out: Path,
    citus_url: str | None,
) -> int:
    started = time.monotonic()
    say(
        f"bench --citus ({mode}): {runs} round(s) of {seconds:g} s per scenario and side, "
        f"{CLIENTS} clients, pgbench -M prepared -j {PGBENCH_THREADS}"
    )
    load_before = load_average()
    cluster: Any = None
    plain_server = None
    try:
        if citus_url is None:
            say("starting the local Citus cluster (a coordinator and two workers)")
            cluster = harness.start_cluster(settings=CLUSTER_SETTINGS)
            coordinator = cluster.url()
            described = "Local Citus 12.1 cluster on this machine: a coordinator and 2 workers"
        else:
            coordinator = _with_database(citus_url, "postgres")
            described = f"Citus cluster at {urlsplit(citus_url).hostname}"
        harness.drop_database(coordinator, DATABASE)
        citus_db = harness.create_database(coordinator, DATABASE)
        _, workers = harness.nodes_of(coordinator)
        citus_nodes = {"coordinator": citus_db}
        for i, (host, port) in enumerate(workers, start=1):
            citus_nodes[f"worker{i}"] = f"postgresql://{harness.SUPERUSER}@{host}:{port}/{DATABASE}"
        citus = Side("citus", citus_db, _target(citus_db), citus_nodes)

        plain_server = start_server()
        plain_db = create_database(plain_server.url(database="postgres"), DATABASE)
        plain = Side("plain", plain_db, _target(plain_db), {"server": plain_db})
        server_settings(plain_db)  # refuses a server that is not durable
        for side in (plain, citus):
            side.settings = {n: node_settings(u) for n, u in side.node_urls.items()}
            for node, values in side.settings.items():
                say(f"  {side.name} {node}: " + ", ".join(f"{k}={v}" for k, v in values.items()))

        say("setup: migrate (on Citus: distribute), fund 10,000 owners and `hot`, pairs")
        pairs: list[tuple[int, str, str]] = []

        def citus_pairs() -> list[tuple[int, str, str]]:
            pairs.extend(make_pairs(owners_by_worker(citus.url)))
            return pairs

        _prepare(citus, citus_pairs)
        _prepare(plain, lambda: pairs)
        plans = routing(citus.url)
        for where, text in plans.items():
            say(f"  post_entry {where}: {text}")

        results = [Result(sc) for sc in SCENARIOS]
        run_rounds([plain, citus], results, runs, seconds)
        report = build(
            {
                "mode": mode,
                "runs": runs,
                "seconds_per_run": seconds,
                "clients": CLIENTS,
                "pgbench_threads": PGBENCH_THREADS,
                "cluster": described,
                "data": f"ledger migrated (distributed on Citus), owners o1..o{OWNERS} funded "
                f"with {FUNDING:,} and `hot` through ledger.post_entry; {PAIRS:,} transfer "
                "pairs, each a sender and a receiver on different workers (half each way), "
                "the same on both sides",
            },
            [plain, citus],
            results,
            {
                "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": machine_info(),
                "load_average_before": load_before,
                "load_average_after": load_average(),
                "routing": plans,
            },
        )
    finally:
        if plain_server is not None:
            plain_server.stop()
        if cluster is not None:
            cluster.stop()
        elif citus_url is not None:
            try:
                harness.drop_database(_with_database(citus_url, "postgres"), DATABASE)
            except psycopg.Error as exc:
                say(f"could not drop {DATABASE} on the cluster: {exc}")
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    paths = write(report, out, "citus" if mode == "full" else "citus-quick")
    say("")
    say(markdown(report))
    say("written: " + ", ".join(str(p) for p in paths))
    failed = [k for k, sc in report["scenarios"].items() if sc["status"] != "ok"]
    return 1 if failed else 0
