"""The Python harness: N threads calling a function in a loop for a fixed
time, each call timed. Drives `Ledger.post_entry` against raw psycopg
running the same SQL call (pgbench cannot drive a Python wrapper)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from bench.measure import Sample, sample_from_latencies
from bench.scripts import OWNERS

# The statement a caller writes by hand, when the wrapper's own text cannot be had.
FALLBACK_POST_ENTRY_SQL = (
    "SELECT * FROM ledger.post_entry(owner_id => %(owner_id)s::text, app => %(app)s::text,"
    " operation => %(operation)s::text, idempotency_key => %(idempotency_key)s::text,"
    " amount => %(amount)s::numeric)"
)


def post_entry_sql() -> str:
    """The exact SQL text Ledger.post_entry sends (ledger_py.queries), so that
    raw psycopg runs the same statement and the ratio is the wrapper's cost."""
    params = {"owner_id": "", "app": "", "operation": "", "idempotency_key": "", "amount": 1}
    try:
        from ledger_py import queries

        return str(queries.POST_ENTRY.sql(queries.POST_ENTRY.params(params)))
    except (ImportError, AttributeError, KeyError, TypeError):
        return FALLBACK_POST_ENTRY_SQL


Call = Callable[[int, int], Any]  # (thread number, call number) -> result


class WrapperMissing(RuntimeError):
    """ledger_py.Ledger (or a method of it) does not exist yet."""


def run_threads(
    make_call: Callable[[int], Call], threads: int, seconds: float
) -> tuple[Sample, str | None]:
    """Runs make_call(thread)(thread, i) in `threads` threads for `seconds`
    after six untimed warm-up calls each (connect, then prepare). Returns the sample and the first
    error message (errors are counted, not raised)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    first_error: list[str] = []
    ready = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(n: int) -> None:
        call = make_call(n)
        try:
            for w in range(6):  # warm-up: connection, then prepared (threshold 5)
                call(n, -1 - w)
        except Exception as exc:
            first_error.append(f"{type(exc).__name__}: {exc}")
            errors[n] += 1
        ready.wait()
        mine = latencies[n]
        i = 0
        while True:
            start = time.perf_counter()
            if start >= deadline[0]:
                break
            try:
                call(n, i)
            except Exception as exc:
                errors[n] += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
            else:
                mine.append((time.perf_counter() - start) * 1000.0)
            i += 1

    pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for t in pool:
        t.start()
    deadline[0] = time.perf_counter() + 3600
    ready.wait()
    began = time.perf_counter()
    deadline[0] = began + seconds
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - began
    merged = [x for per_thread in latencies for x in per_thread]
    return sample_from_latencies(merged, elapsed, errors=sum(errors)), (
        first_error[0] if first_error else None
    )


def _owner(thread: int, i: int) -> str:
    return f"o{(thread * 7919 + i * 104729) % OWNERS + 1}"


def raw_psycopg(url: str, threads: int, seconds: float) -> tuple[Sample, str | None]:
    """One connection per thread, autocommit, prepared on first use."""
    run = uuid.uuid4().hex[:12]
    query = post_entry_sql()
    connections: list[psycopg.Connection[Any]] = []

    def make_call(n: int) -> Call:
        # psycopg's defaults, as the wrapper's pool: prepared after 5 executions.
        conn = psycopg.connect(url, autocommit=True)
        connections.append(conn)

        def call(thread: int, i: int) -> Any:
            return conn.execute(
                query,
                {
                    "owner_id": _owner(thread, i),
                    "app": "bench",
                    "operation": "CREDIT_ADD",
                    "idempotency_key": f"raw-{run}-{thread}-{i}",
                    "amount": 1,
                },
            ).fetchone()

        return call

    try:
        return run_threads(make_call, threads, seconds)
    finally:
        for conn in connections:
            conn.close()


def wrapper_ledger(
    url: str, threads: int, seconds: float, ledger_class: Any = None
) -> tuple[Sample, str | None]:
    """ledger_py.Ledger (or `ledger_class`, another version's) with a pool of
    `threads` connections, shared by the threads."""
    try:
        from ledger_py import Ledger
    except ImportError as exc:
        raise WrapperMissing(f"ledger_py.Ledger is not available yet ({exc})") from exc
    if ledger_class is not None:
        Ledger = ledger_class
    if not hasattr(Ledger, "post_entry"):
        raise WrapperMissing("ledger_py.Ledger has no post_entry yet")
    run = uuid.uuid4().hex[:12]
    ledger = _make_ledger(Ledger, url, threads)
    try:

        def make_call(n: int) -> Call:
            def call(thread: int, i: int) -> Any:
                return ledger.post_entry(
                    owner_id=_owner(thread, i),
                    app="bench",
                    operation="CREDIT_ADD",
                    idempotency_key=f"py-{run}-{thread}-{i}",
                    amount=1,
                )

            return call

        return run_threads(make_call, threads, seconds)
    finally:
        close = getattr(ledger, "close", None)
        if callable(close):
            close()


def _make_ledger(ledger_class: Any, url: str, size: int) -> Any:
    """Ledger(url, min_size=..., max_size=...) as the README shows; older
    signatures without min_size are tried next."""
    for kwargs in ({"min_size": size, "max_size": size}, {"max_size": size}):
        try:
            return ledger_class(url, **kwargs)
        except TypeError:
            continue
    return ledger_class(url)
