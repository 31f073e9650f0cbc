"""`python -m bench [--quick]`: start a durable throwaway server, set up the
data, run every scenario round after round (baselines and ledger calls
interleaved, so drift hits both), then write bench/results/."""

from __future__ import annotations

import argparse
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from bench import dataset, expiry, httpload, pgbench, pyload, report, scripts
from bench.measure import Sample
from bench.scenarios import CLIENTS, PGBENCH_THREADS, Scenario
from bench.server import load_average, machine_info, server_settings, start_server

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    mode: str
    runs: int
    seconds: float
    scale: int
    growth_rows: int  # 0: no growth scenarios
    due_grants: int  # grants expire_grants expires per run of the expiry scenarios
    out: Path
    only: frozenset[str] | None
    debug: bool = False
    citus: bool = False  # the Citus scenario (bench/citus.py) instead of the main run
    citus_url: str | None = None
    webhooks: bool = False  # the webhook dispatch scenario (bench/webhooks.py) instead
    console: bool = False  # the console's render time (bench/console.py) instead


def parse_args(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="seconds, not minutes: 1 run of 1 s per scenario, scale 1, no growth",
    )
    parser.add_argument("--runs", type=int, help="runs per scenario (median reported); full: 3")
    parser.add_argument("--seconds", type=float, help="duration of one run; full: 10")
    parser.add_argument("--scale", type=int, help="pgbench scale; full: 10")
    parser.add_argument(
        "--growth-rows",
        type=int,
        help="entries bulk-loaded for the growth scenarios (0 skips them); full: 5000000",
    )
    parser.add_argument(
        "--due-grants",
        type=int,
        help="due grants each run of the expiry scenarios expires; full: 100000",
    )
    parser.add_argument("--only", help="comma-separated scenario keys to run (others skipped)")
    parser.add_argument(
        "--out", type=Path, help="results folder; full: bench/results, quick: bench/results/tmp"
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of a failing scenario"
    )
    parser.add_argument(
        "--citus",
        action="store_true",
        help="the Citus scenario: start the local 3-node cluster of the tests and compare each "
        "call with the same call on one plain server (bench/results/citus.md); 3 runs of 6 s",
    )
    parser.add_argument(
        "--citus-url",
        metavar="URL",
        help="the Citus scenario on a running cluster: the coordinator's superuser URL "
        "(its workers must accept the same user)",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="the webhook dispatcher: events/s to a local receiver with 1 and 4 dispatchers "
        "beside a bare HTTP client, latency from commit to receipt (bench/results/webhooks.md); "
        "3 rounds",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="the console: server-side render time of the owner page of an owner with "
        "100,000 entries beside GET /balance in the same rounds (bench/results/console.md)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.console:
        return Plan(
            mode="quick" if quick else "full",
            runs=0,
            seconds=0.0,
            scale=0,
            growth_rows=0,
            due_grants=0,
            out=args.out or (RESULTS / "tmp" if quick else RESULTS),
            only=None,
            debug=args.debug,
            console=True,
        )
    if args.webhooks:
        return Plan(
            mode="quick" if quick else "full",
            runs=args.runs or (1 if quick else 3),
            seconds=0.0,
            scale=0,
            growth_rows=0,
            due_grants=0,
            out=args.out or (RESULTS / "tmp" if quick else RESULTS),
            only=None,
            debug=args.debug,
            webhooks=True,
        )
    citus = bool(args.citus or args.citus_url)
    if citus:
        return Plan(
            mode="quick" if quick else "full",
            runs=args.runs or (1 if quick else 3),
            seconds=args.seconds or (1.0 if quick else 6.0),
            scale=0,
            growth_rows=0,
            due_grants=0,
            out=args.out or (RESULTS / "tmp" if quick else RESULTS),
            only=None,
            debug=args.debug,
            citus=True,
            citus_url=args.citus_url,
        )
    return Plan(
        mode="quick" if quick else "full",
        runs=args.runs or (1 if quick else 3),
        seconds=args.seconds or (1.0 if quick else 10.0),
        scale=args.scale or (1 if quick else 10),
        growth_rows=(
            args.growth_rows if args.growth_rows is not None else (0 if quick else 5_000_000)
        ),
        due_grants=args.due_grants or (2_000 if quick else 100_000),
        out=args.out or (RESULTS / "tmp" if quick else RESULTS),
        only=frozenset(k.strip() for k in args.only.split(",")) if args.only else None,
        debug=args.debug,
    )


def say(text: str) -> None:
    print(text, flush=True)


def checkpoint(url: str) -> None:
    """Once after the setup: the bulk writes of the setup are flushed before
    the first run. No CHECKPOINT between runs: right after one, the first
    touch of every page writes a full-page image to the WAL, which would
    charge each short run a cost that production spreads over a whole
    checkpoint cycle (checkpoint_timeout=30min and max_wal_size=8GB keep
    checkpoints out of a run; the report counts any that happen)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def wal_and_checkpoints(url: str) -> tuple[int, int, int]:
    """(WAL bytes, full-page images, checkpoints) written by the cluster so far."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT w.wal_bytes::bigint, w.wal_fpi, b.checkpoints_timed + b.checkpoints_req"
            " FROM pg_stat_wal w, pg_stat_bgwriter b"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def function_exists(url: str, signature: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (signature,)).fetchone()
    return bool(row and row[0])


def pgbench_scenario(
    key: str,
    title: str,
    target: pgbench.Target,
    *,
    script: str | None = None,
    builtin: str | None = None,
    clients: int = CLIENTS,
    per_txn: int = 1,
    unit: str = "txn/s",
    note: str | None = None,
) -> Scenario:
    def measure(seconds: float) -> Sample:
        return pgbench.run(
            target,
            script=script,
            builtin=builtin,
            clients=clients,
            threads=PGBENCH_THREADS,
            seconds=seconds,
            per_txn=per_txn,
        )

    return Scenario(key, title, "pgbench", clients, measure, unit=unit, note=note)


def main_scenarios(url: str, target: pgbench.Target) -> list[Scenario]:
    one = dict(clients=1)
    items = [
        pgbench_scenario("tpcb_like", "pgbench tpcb-like (baseline)", target, builtin="tpcb-like"),
        pgbench_scenario(
            "select_only", "pgbench select-only (baseline)", target, builtin="select-only"
        ),
        pgbench_scenario(
            "one_row_update",
            "UPDATE of one row, all clients (baseline)",
            target,
            script=scripts.ONE_ROW_UPDATE,
        ),
        pgbench_scenario(
            "floor_uniform",
            "bare floor: one CTE, update account + insert entry, uniform",
            target,
            script=scripts.FLOOR_UNIFORM,
        ),
        pgbench_scenario(
            "floor_function",
            "the bare floor's statement in a PL/pgSQL SECURITY DEFINER function, uniform",
            target,
            script=scripts.FLOOR_FUNCTION_UNIFORM,
            note="what the call form alone costs (no ledger checks); no target",
        ),
        pgbench_scenario(
            "floor_hot",
            "bare floor: debit CTE, every client on one owner",
            target,
            script=scripts.FLOOR_HOT,
        ),
        pgbench_scenario(
            "floor_grants_uniform",
            "grants floor: the bare floor's credit + its grant row, one CTE, uniform",
            target,
            script=scripts.FLOOR_GRANTS_UNIFORM,
        ),
        pgbench_scenario(
            "floor_grants_hot",
            "grants floor: the bare floor's debit + the first grant's update + a spending row,"
            " one CTE, every client on one owner",
            target,
            script=scripts.FLOOR_GRANTS_HOT,
        ),
        pgbench_scenario(
            "floor_full_uniform",
            "full floor: the grants floor's credit + its entry.posted event row, one CTE, uniform",
            target,
            script=scripts.FLOOR_FULL_UNIFORM,
        ),
        pgbench_scenario(
            "floor_full_hot",
            "full floor: the grants floor's debit + its entry.posted event row, one CTE, every"
            " client on one owner",
            target,
            script=scripts.FLOOR_FULL_HOT,
        ),
        pgbench_scenario(
            "post_entry_uniform",
            "ledger.post_entry credit, uniform over 10,000 owners",
            target,
            script=scripts.POST_ENTRY_UNIFORM,
        ),
        pgbench_scenario(
            "post_entry_hot",
            "ledger.post_entry debit, every client on one owner",
            target,
            script=scripts.POST_ENTRY_HOT,
        ),
        pgbench_scenario(
            "transfer_uniform",
            "ledger.transfer, uniform over 10,000 owners",
            target,
            script=scripts.TRANSFER_UNIFORM,
        ),
        pgbench_scenario(
            "debit_never_expiring",
            "ledger.post_entry debit of an owner with one never-expiring grant, uniform",
            target,
            script=scripts.DEBIT_NEVER_EXPIRING,
        ),
        pgbench_scenario(
            "debit_expiring",
            "ledger.post_entry debit of an owner with 3 active expiring grants, uniform",
            target,
            script=scripts.DEBIT_EXPIRING,
            note="grants of 1,000,000 expiring in 10, 11 and 12 years: the debit spends the first",
        ),
        pgbench_scenario(
            "get_balance", "ledger.get_balance, uniform", target, script=scripts.GET_BALANCE
        ),
        pgbench_scenario(
            "post_entry_single_client",
            "ledger.post_entry, 1 client (entries/s)",
            target,
            script=scripts.POST_ENTRY_UNIFORM,
            unit="entries/s",
            **one,
        ),
        pgbench_scenario(
            "floor_batch",
            f"bare floor of a batch: {scripts.BATCH_SIZE} entries + account updates, one statement,"
            " 1 client (entries/s)",
            target,
            script=scripts.FLOOR_BATCH,
            per_txn=scripts.BATCH_SIZE,
            unit="entries/s",
            **one,
        ),
        pgbench_scenario(
            "post_entries_batch",
            f"ledger.post_entries, {scripts.BATCH_SIZE} entries per call, 1 client (entries/s)",
            target,
            script=scripts.POST_ENTRIES_BATCH,
            per_txn=scripts.BATCH_SIZE,
            unit="entries/s",
            note="the JSON array is built server-side, inside the timing",
            **one,
        ),
    ]
    # Each ledger scenario right after its baseline: the pair runs seconds
    # apart in every round, and the per-round ratio cancels the drift.
    order = [
        "tpcb_like", "one_row_update", "floor_uniform", "floor_grants_uniform", "floor_function",
        "floor_full_uniform", "post_entry_uniform", "transfer_uniform",
        "floor_hot", "floor_grants_hot", "floor_full_hot", "post_entry_hot",
        "debit_never_expiring", "debit_expiring",
        "select_only", "get_balance", "post_entry_single_client",
        "floor_batch", "post_entries_batch",
    ]  # fmt: skip
    items.sort(key=lambda sc: order.index(sc.key))
    if not function_exists(url, "ledger.post_entries(jsonb, text)"):
        batch = next(sc for sc in items if sc.key == "post_entries_batch")
        batch.skip = "ledger.post_entries(jsonb, text) does not exist yet (sql/50_batches.sql)"
    items += python_scenarios(url)
    items += http_scenarios(url)
    return items


def expiry_scenarios(expire_url: str, due_grants: int) -> list[Scenario]:
    """expire_grants over `due_grants` grants planted before each run (in
    their own database), from one session and from two at once."""
    runs = iter(range(1, 1_000_000))

    def scenario(sessions: int) -> Scenario:
        def prepare() -> None:
            expiry.plant_due_grants(expire_url, f"x{next(runs)}-", due_grants)

        calls: list[int] = []

        def measure(seconds: float) -> Sample:
            sample, info = expiry.expire_all(expire_url, sessions)
            calls.append(info["calls"])
            return sample

        plural = "s" if sessions > 1 else ""
        sc = Scenario(
            f"expire_grants_{sessions}",
            f"ledger.expire_grants(max_rows => {expiry.MAX_ROWS}) until {due_grants:,} due grants"
            f" are expired, {sessions} session{plural} (grants/s)",
            "python",
            sessions,
            measure,
            unit="grants/s",
            note="one due PROMO_CREDIT grant per owner, planted before each run (bench/expiry.py);"
            " p50/p99 per call",
            prepare=prepare,
        )
        sc.extra["calls_per_run"] = calls
        return sc

    return [scenario(1), scenario(2)]


def python_scenarios(url: str) -> list[Scenario]:
    def measured(
        fn: Callable[[str, int, float], tuple[Sample, str | None]], scenario: list[Scenario]
    ) -> Callable[[float], Sample]:
        def measure(seconds: float) -> Sample:
            sample, first_error = fn(url, CLIENTS, seconds)
            if first_error and sample.count == 0:
                raise RuntimeError(first_error)
            if first_error:
                scenario[0].extra["first_error"] = first_error
            return sample

        return measure

    raw: list[Scenario] = []
    wrapped: list[Scenario] = []
    raw.append(
        Scenario(
            "python_raw",
            "raw psycopg: SELECT * FROM ledger.post_entry(...), 8 threads",
            "python",
            CLIENTS,
            measured(pyload.raw_psycopg, raw),
            unit="calls/s",
            note="one connection per thread, prepared statements",
        )
    )
    wrapped.append(
        Scenario(
            "python_wrapper",
            "ledger_py Ledger.post_entry, 8 threads",
            "python",
            CLIENTS,
            measured(pyload.wrapper_ledger, wrapped),
            unit="calls/s",
            note="one Ledger, pool of 8 connections",
        )
    )
    try:
        from ledger_py import Ledger

        if not hasattr(Ledger, "post_entry"):
            wrapped[0].skip = "ledger_py.Ledger has no post_entry yet"
    except ImportError as exc:
        wrapped[0].skip = f"ledger_py.Ledger does not exist yet ({exc})"
    return [raw[0], wrapped[0]]


def http_scenarios(url: str) -> list[Scenario]:
    """POST /ledger and GET /balance through one gunicorn (the production
    configuration, web/gunicorn_conf.py), started at the first run."""
    state: dict[str, Any] = {}

    def server() -> httpload.Gunicorn:
        if "server" not in state:
            token = httpload.create_token(url)
            gunicorn = httpload.Gunicorn(url)
            state["server"] = gunicorn
            httpload.probe(gunicorn.base, token)
            state["token"] = token
        return state["server"]  # type: ignore[no-any-return]

    def measure_with(scenario: list[Scenario], balance: bool) -> Callable[[float], Sample]:
        def measure(seconds: float) -> Sample:
            gunicorn = server()
            sample = httpload.run_wrk(
                gunicorn.base,
                state["token"],
                connections=CLIENTS,
                threads=2,
                seconds=seconds,
                balance=balance,
            )
            scenario[0].extra["worker_rss_mb"] = gunicorn.worker_rss_mb()
            scenario[0].extra["api_key_cache_seconds"] = os.environ.get(
                "LEDGER_API_KEY_CACHE_SECONDS", httpload.API_KEY_CACHE_SECONDS
            )
            return sample

        return measure

    post: list[Scenario] = []
    balance: list[Scenario] = []
    note = (
        f"web/gunicorn_conf.py: {httpload.WORKERS} gevent workers, pool of "
        f"{httpload.THREADS_PER_WORKER} per worker, LEDGER_LOG_LEVEL=warning (no request "
        f"lines), API keys cached up to {httpload.API_KEY_CACHE_SECONDS} s; wrk -t2 -c8 on the "
        "same cores"
    )
    post.append(
        Scenario(
            "http_post_ledger",
            "POST /ledger via gunicorn (wrk, 8 connections)",
            "wrk",
            CLIENTS,
            measure_with(post, False),
            unit="requests/s",
            note=note,
        )
    )
    balance.append(
        Scenario(
            "http_get_balance",
            "GET /balance/{owner} via gunicorn (wrk, 8 connections)",
            "wrk",
            CLIENTS,
            measure_with(balance, True),
            unit="requests/s",
            note=note,
        )
    )
    post[0].extra["stop"] = lambda: state["server"].stop() if "server" in state else None
    try:
        httpload.check_available()
    except httpload.HttpUnavailable as exc:
        post[0].skip = balance[0].skip = str(exc)
    return [post[0], balance[0]]


def run_rounds(scenarios: list[Scenario], plan: Plan, url: str, label: str = "") -> None:
    """Round r runs every scenario once, so slow drift of the machine is
    spread over all of them instead of landing on one. Beside each run, the
    WAL it wrote per unit (bytes, full-page images) and any checkpoint."""
    for r in range(plan.runs):
        for sc in scenarios:
            if sc.skip or sc.error:
                continue
            try:
                if sc.prepare is not None:
                    sc.prepare()
                before = wal_and_checkpoints(url)
                sample = sc.measure(plan.seconds)
            except Exception as exc:
                sc.error = f"{type(exc).__name__}: {exc}"
                say(f"  {label}{sc.key:28} ERROR {sc.error}")
                if plan.debug:
                    traceback.print_exc()
                continue
            after = wal_and_checkpoints(url)
            units = max(sample.count, 1)
            sc.wal.append(
                {
                    "wal_bytes_per_unit": round((after[0] - before[0]) / units, 1),
                    "fpi_per_unit": round((after[1] - before[1]) / units, 3),
                    "checkpoints": after[2] - before[2],
                }
            )
            sc.samples.append(sample)
            errors = f"  errors {sample.errors}" if sample.errors else ""
            say(
                f"  run {r + 1}/{plan.runs} {sc.key:28} {sample.rate:10.1f} {sc.unit:10}"
                f" p50 {_ms(sample.p50_ms)} p99 {_ms(sample.p99_ms)}{errors}"
            )


def _ms(value: float | None) -> str:
    return f"{value:7.2f} ms" if value is not None else "      - ms"


def growth_scenarios(
    server_url: str, server: Any, plan: Plan
) -> tuple[list[Scenario], dict[str, Any]]:
    """post_entry on an empty journal against the same with growth_rows
    entries, and list_entries pages at that size. Two databases, set up
    alike except for the bulk-loaded history, so that their runs interleave
    round by round like the other pairs (drift hits both)."""
    port = server.settings["port"]
    empty_url = dataset.create_database(server_url, "bench_growth_empty")
    dataset.prepare_ledger(empty_url)
    big_url = dataset.create_database(server_url, "bench_growth_big")
    dataset.prepare_ledger(big_url)
    say(f"growth: bulk-loading {plan.growth_rows:,} entries (setup, not measured)")
    started = time.monotonic()
    loaded = dataset.bulk_load_history(big_url, plan.growth_rows)
    loaded["load_seconds"] = round(time.monotonic() - started, 1)
    say(f"  loaded {loaded}")
    empty_db = pgbench.Target("127.0.0.1", port, "postgres", "bench_growth_empty")
    big_db = pgbench.Target("127.0.0.1", port, "postgres", "bench_growth_big")
    items = [
        pgbench_scenario(
            "growth_post_entry_empty",
            "ledger.post_entry uniform, empty journal",
            empty_db,
            script=scripts.POST_ENTRY_UNIFORM,
        ),
        pgbench_scenario(
            "growth_post_entry_5m",
            f"ledger.post_entry uniform, {plan.growth_rows:,} entries in the journal",
            big_db,
            script=scripts.POST_ENTRY_UNIFORM,
        ),
        pgbench_scenario(
            "growth_list_entries",
            f"ledger.list_entries first page of 100, {plan.growth_rows:,} entries, 1 client",
            big_db,
            script=scripts.LIST_ENTRIES_FIRST_PAGE,
            clients=1,
            unit="pages/s",
        ),
        pgbench_scenario(
            "growth_list_entries_deep",
            "ledger.list_entries page of 100 from a random after_id, 1 client",
            big_db,
            script=scripts.list_entries_deep_page(int(loaded["max_entry_id"])),
            clients=1,
            unit="pages/s",
        ),
    ]
    # The bulk load ended with a CHECKPOINT: one untimed run of each write
    # scenario first, so that the full-page images that follow a checkpoint
    # (many more in a 5M-entry journal) are not charged to the first round.
    for sc in items[:2]:
        try:
            sc.measure(plan.seconds)
        except Exception as exc:  # the timed rounds report it
            say(f"  warm-up of {sc.key} failed: {exc}")
    run_rounds(items, plan, big_url, label="growth ")
    return items, loaded


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    if plan.console:
        from bench import console

        return console.main(mode=plan.mode, out=plan.out)
    if plan.webhooks:
        from bench import webhooks

        return webhooks.main(mode=plan.mode, runs=plan.runs, out=plan.out)
    if plan.citus:
        # Imported here: it brings in the tests' cluster harness, which the main run never needs.
        from bench import citus

        return citus.main(
            mode=plan.mode,
            runs=plan.runs,
            seconds=plan.seconds,
            out=plan.out,
            citus_url=plan.citus_url,
        )
    started = time.monotonic()
    say(
        f"bench ({plan.mode}): {plan.runs} run(s) of {plan.seconds:g} s per scenario, "
        f"{CLIENTS} clients, pgbench -M prepared -j {PGBENCH_THREADS}"
    )
    load_before = load_average()
    server = start_server()
    try:
        server_url = server.url(database="postgres")
        settings = server_settings(server_url)
        machine = machine_info()
        say(f"server: {settings.get('version')}")
        say("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "version"))
        url = dataset.create_database(server_url, "bench")
        target = pgbench.Target("127.0.0.1", server.settings["port"], "postgres", "bench")
        say(
            "setup: migrate, fund 10,000 owners, the hot owner and 2 x 10,000 owners of grants,"
            f" floor tables, pgbench -i -s {plan.scale}, the expiry database"
        )
        dataset.prepare_ledger(url)
        dataset.prepare_grant_owners(url)
        floor_fks = dataset.prepare_floor(url)
        dataset.prepare_pgbench(target, plan.scale)
        expire_url = dataset.create_database(server_url, "bench_expire")
        expiry.prepare_database(expire_url)

        checkpoint(url)
        scenarios = main_scenarios(url, target) + expiry_scenarios(expire_url, plan.due_grants)
        if plan.only is not None:
            for sc in scenarios:
                if sc.key not in plan.only and not sc.skip:
                    sc.skip = "not selected (--only)"
        for sc in scenarios:
            if sc.skip:
                say(f"  skip {sc.key}: {sc.skip}")
        try:
            run_rounds(scenarios, plan, url)
        finally:
            for sc in scenarios:
                stop = sc.extra.pop("stop", None)
                if callable(stop):
                    stop()

        growth: dict[str, Any] | None = None
        if plan.growth_rows > 0 and (
            plan.only is None or any(k.startswith("growth") for k in plan.only)
        ):
            more, growth = growth_scenarios(server_url, server, plan)
            scenarios += more
    finally:
        server.stop()

    results = report.build(
        plan_info={
            "mode": plan.mode,
            "runs": plan.runs,
            "seconds_per_run": plan.seconds,
            "clients": CLIENTS,
            "pgbench_threads": PGBENCH_THREADS,
            "pgbench_scale": plan.scale,
            "growth_rows": plan.growth_rows,
            "due_grants": plan.due_grants,
        },
        machine=machine,
        settings=settings,
        scenarios=scenarios,
        extra={
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "elapsed_seconds": round(time.monotonic() - started, 1),
            "floor_foreign_keys": floor_fks,
            "growth_setup": growth,
            "connect_as": "postgres (superuser), over TCP on 127.0.0.1, for every scenario",
        },
    )
    paths = report.write(results, plan.out, stem="quick" if plan.mode == "quick" else "latest")
    say("")
    say(report.markdown(results))
    say("written: " + ", ".join(str(p) for p in paths))
    return 0
