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

# The statement a caller writes by hand: named parameters, as the wrapper does.
POST_ENTRY_SQL = (
    "SELECT * FROM ledger.post_entry(owner_id => %s, app => %s, operation => %s,"
    " idempotency_key => %s, amount => %s)"
)

Call = Callable[[int, int], Any]          # (thread number, call number) -> result


class WrapperMissing(RuntimeError):
    """ledger_py.Ledger (or a method of it) does not exist yet."""


def run_threads(make_call: Callable[[int], Call], threads: int, seconds: float) -> tuple[Sample, str | None]:
    """Runs make_call(thread)(thread, i) in `threads` threads for `seconds`
    after one untimed warm-up call each. Returns the sample and the first
    error message (errors are counted, not raised)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    first_error: list[str] = []
    ready = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(n: int) -> None:
        call = make_call(n)
        try:
            call(n, -1)                       # warm-up: connection, prepared statement
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
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
            except Exception as exc:  # noqa: BLE001
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
    return sample_from_latencies(merged, elapsed, errors=sum(errors)), (first_error[0] if first_error else None)


def _owner(thread: int, i: int) -> str:
    return f"o{(thread * 7919 + i * 104729) % OWNERS + 1}"


def raw_psycopg(url: str, threads: int, seconds: float) -> tuple[Sample, str | None]:
    """One connection per thread, autocommit, prepared on first use."""
    run = uuid.uuid4().hex[:12]
    connections: list[psycopg.Connection[Any]] = []

    def make_call(n: int) -> Call:
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=0)
        connections.append(conn)

        def call(thread: int, i: int) -> Any:
            return conn.execute(
                POST_ENTRY_SQL, (_owner(thread, i), "bench", "CREDIT_ADD", f"raw-{run}-{thread}-{i}", 1)
            ).fetchone()

        return call

    try:
        return run_threads(make_call, threads, seconds)
    finally:
        for conn in connections:
            conn.close()


def wrapper_ledger(url: str, threads: int, seconds: float) -> tuple[Sample, str | None]:
    """ledger_py.Ledger with a pool of `threads` connections, shared by the threads."""
    try:
        from ledger_py import Ledger
    except ImportError as exc:
        raise WrapperMissing(f"ledger_py.Ledger is not available yet ({exc})") from exc
    if not hasattr(Ledger, "post_entry"):
        raise WrapperMissing("ledger_py.Ledger has no post_entry yet")
    run = uuid.uuid4().hex[:12]
    ledger = _make_ledger(Ledger, url, threads)
    try:

        def make_call(n: int) -> Call:
            def call(thread: int, i: int) -> Any:
                return ledger.post_entry(owner_id=_owner(thread, i), app="bench", operation="CREDIT_ADD",
                                         idempotency_key=f"py-{run}-{thread}-{i}", amount=1)

            return call

        return run_threads(make_call, threads, seconds)
    finally:
        close = getattr(ledger, "close", None)
        if callable(close):
            close()


def _make_ledger(ledger_class: Any, url: str, size: int) -> Any:
    """Ledger(url, min_size=..., max_size=...) as INTERFACES.md shows; older
    signatures without min_size are tried next."""
    for kwargs in ({"min_size": size, "max_size": size, "prepare_threshold": 0},
                   {"max_size": size, "prepare_threshold": 0},
                   {"max_size": size}):
        try:
            return ledger_class(url, **kwargs)
        except TypeError:
            continue
    return ledger_class(url)
