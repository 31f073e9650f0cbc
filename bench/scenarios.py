"""The scenarios, their baselines and the targets of issue 7.

A scenario is a name, a unit and a `measure(seconds) -> Sample`; `skip`
says why it cannot run yet (a function or module still being written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.measure import Sample

CLIENTS = 8
PGBENCH_THREADS = 2


@dataclass
class Scenario:
    key: str
    title: str
    driver: str  # pgbench | python | wrk
    clients: int
    measure: Callable[[float], Sample]
    unit: str = "txn/s"
    skip: str | None = None  # why it does not run
    note: str | None = None  # printed beside the figure
    samples: list[Sample] = field(default_factory=list)
    wal: list[dict[str, float]] = field(default_factory=list)  # per run, beside samples
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    # Setup before each run, outside its timing and its WAL figures.
    prepare: Callable[[], None] | None = None


@dataclass(frozen=True)
class RateTarget:
    """numerator rate / denominator rate >= minimum."""

    title: str
    numerator: str
    denominator: str
    minimum: float
    why: str = ""
    if_missed: str = ""  # printed beside a figure below its target: why it falls short


@dataclass(frozen=True)
class LatencyTarget:
    """a scenario's p99 (ms) <= maximum."""

    title: str
    scenario: str
    maximum_ms: float


# Why a target can fall short on a machine like the one of bench/results
# (2 cores, WAL flushes that cost little): see the diagnostic ratios,
# bench/results/write_path.md, `python -m bench.serverloop` (backend CPU per
# call, one session) and `python -m bench.plprofile` (statement by statement).
_CALL_COST = (
    "CPU-bound: post_entry costs about 2.0x the full floor's backend CPU per call "
    "(bench.serverloop; 4.3x the grants floor's before this round's changes). On top of the "
    "floor's rows it locks the owner's row in a statement of its own (6%), reads the "
    "operation, validates and fingerprints in ledger_shard.post_entry (14%), checks the key "
    "inside its account update (two index probes), writes the entry and its event in "
    "statements of their own, makes the credit's grant through two "
    "function calls and a statement of its own (21%), and asks whether a balance alert was "
    "crossed (6%) (bench.plprofile, bench/results/write_path.md)"
)
_HOT_COST = (
    "every client queues for the owner's row lock, which post_entry takes in a statement of "
    "its own (SELECT ... FOR UPDATE) and holds through its account, entry and entry.posted "
    "statements, the spending of the first grant (a probe and one statement) and "
    "the commit; the floor holds it for its one statement and the commit. Backend CPU per "
    "call (one session, bench.serverloop): post_entry about 2.4x the full floor's "
    "since the account, the entry and the event are written in three statements for "
    "Citus (2.0x when they were one; 3.1x the grants floor's before the grant's "
    "update became a HOT update and the probe a generic plan: "
    "bench/results/write_path.md)"
)

RATE_TARGETS = (
    RateTarget(
        "post_entry uniform / full floor uniform (account, entry, grant, event rows)",
        "post_entry_uniform",
        "floor_full_uniform",
        0.75,
        if_missed=_CALL_COST,
    ),
    RateTarget(
        "post_entry uniform / tpcb-like",
        "post_entry_uniform",
        "tpcb_like",
        1.5,
        if_missed="the same per-call cost as above; tpcb-like's five statements cost less here "
        "than on a machine with slower WAL flushes",
    ),
    RateTarget(
        "post_entry hot owner / full floor one owner (account, entry, grant update, spending, "
        "event rows)",
        "post_entry_hot",
        "floor_full_hot",
        0.9,
        if_missed=_HOT_COST,
    ),
    RateTarget(
        "debit, 3 active expiring grants / debit, one never-expiring grant (uniform)",
        "debit_expiring",
        "debit_never_expiring",
        0.8,
        "the same call; the owner's next_expiry is years ahead, so no expiry runs; the debit "
        "spends the soonest-expiring grant",
    ),
    RateTarget(
        "transfer uniform / bare floor uniform",
        "transfer_uniform",
        "floor_uniform",
        0.45,
        "a transfer is two entries",
        if_missed="both legs write grant rows and events: the sending leg spends (a probe, the "
        "grant's UPDATE, a spending row), the receiving leg reads what it spent "
        "(_transfer_parts) and makes the mirroring grant, each leg writes its entry.posted event "
        "and the transfer its transfer.posted event; backend CPU per transfer about 10.5x the "
        "bare floor's (bench.serverloop; 3.3x to 3.5x before grants and events)",
    ),
    RateTarget(
        "get_balance / select-only",
        "get_balance",
        "select_only",
        0.85,
        if_missed="the owner_id check (LG007) is inlined, but its error function is still set "
        "up at every execution; without the check the ratio was about 0.85",
    ),
    RateTarget(
        "post_entries entries/s / single post_entry entries/s (1 client)",
        "post_entries_batch",
        "post_entry_single_client",
        15.0,
        if_missed="the bare floor of a batch (no grant rows, no events) is itself 25x to 85x "
        "single calls here (diagnostics, across runs: the less loaded the machine, the faster "
        "single calls and the lower the ratio); validation, key probes, running balances, "
        "account locks, the credits' grant rows and entry.posted events (inserted in its "
        "write statement) and the balance-alert check per owner leave post_entries at 0.2 "
        "to 0.3 of that floor",
    ),
    RateTarget(
        "Python Ledger.post_entry / raw psycopg (8 threads)",
        "python_wrapper",
        "python_raw",
        0.92,
        if_missed="the wrapper's own CPU per call is about 30 to 45 us on this machine, most of "
        "it the pool's getconn/putconn, which raw psycopg on a dedicated connection per thread "
        "does not pay; 8 threads share one GIL (bench.pycpu, bench/results/http_profile.md)",
    ),
    RateTarget(
        "HTTP POST /ledger / SQL post_entry",
        "http_post_ledger",
        "post_entry_uniform",
        0.35,
        if_missed="about 1 ms of worker CPU per request (gunicorn's parser and access log, the "
        "gevent-to-thread hand-off, Flask's request context, the ledger_py call) on the 2 cores "
        "wrk and PostgreSQL also use: bench/results/http_profile.md",
    ),
    RateTarget(
        "post_entry at 5M entries / at 0", "growth_post_entry_5m", "growth_post_entry_empty", 0.9
    ),
)

# Ratios without a target, printed beside the targets: where the distance
# to a target comes from.
DIAGNOSTIC_RATIOS = (
    RateTarget(
        "HTTP GET /balance / SQL get_balance (a read: nearly all of it is the HTTP stack)",
        "http_get_balance",
        "get_balance",
        0.0,
    ),
    RateTarget(
        "post_entry uniform / bare floor uniform (account and entry rows only)",
        "post_entry_uniform",
        "floor_uniform",
        0.0,
    ),
    RateTarget(
        "post_entry uniform / grants floor uniform (account, entry, grant rows: no event)",
        "post_entry_uniform",
        "floor_grants_uniform",
        0.0,
    ),
    RateTarget(
        "post_entry hot owner / grants floor one owner (no event row)",
        "post_entry_hot",
        "floor_grants_hot",
        0.0,
    ),
    RateTarget(
        "full floor uniform / grants floor uniform (what the event row costs plain SQL)",
        "floor_full_uniform",
        "floor_grants_uniform",
        0.0,
    ),
    RateTarget(
        "bare floor in a function / bare floor (the call form alone)",
        "floor_function",
        "floor_uniform",
        0.0,
    ),
    RateTarget(
        "post_entry uniform / bare floor in a function", "post_entry_uniform", "floor_function", 0.0
    ),
    RateTarget(
        "grants floor uniform / bare floor uniform (what a credit's grant row costs plain SQL)",
        "floor_grants_uniform",
        "floor_uniform",
        0.0,
    ),
    RateTarget(
        "grants floor one owner / bare floor one owner (what a debit's grant rows cost plain SQL)",
        "floor_grants_hot",
        "floor_hot",
        0.0,
    ),
    RateTarget(
        "post_entries / bare floor of a batch (1 client, entries/s)",
        "post_entries_batch",
        "floor_batch",
        0.0,
    ),
    RateTarget(
        "bare floor of a batch / single post_entry (1 client, entries/s)",
        "floor_batch",
        "post_entry_single_client",
        0.0,
    ),
    RateTarget(
        "expire_grants, 2 sessions / 1 session (grants/s)",
        "expire_grants_2",
        "expire_grants_1",
        0.0,
    ),
    RateTarget(
        "expire_grants grants/s (1 session) / post_entries entries/s (1 client): both write "
        "1,000 entries per transaction",
        "expire_grants_1",
        "post_entries_batch",
        0.0,
    ),
)

LATENCY_TARGETS = (
    LatencyTarget("list_entries page of 100 at 5M entries, p99", "growth_list_entries", 2.0),
)

# Worker memory of the HTTP scenario (issue 5): below this per worker.
HTTP_WORKER_RSS_MB = 100.0
