"""The expiry scenario: `ledger.expire_grants(max_rows => 1000)` over a set
of due grants, from one session or several at once.

The due grants are planted, not made by `grant_credits` and waited for:
each is what `grant_credits(owner, 'bench', 'PROMO_CREDIT', key, 100)` wrote
30 days (PROMO_CREDIT's expires_after) before its expiry, one owner each,
expiries a few milliseconds apart in the past: the account (balance,
last_seq 1, next_expiry), the credit entry (key, fingerprint, running
balance, created_at, created_by) and the grant (the operation's priority,
remaining = amount, active), already warned of (expiring_notified: the
expire_grants runs of the day before sent its grant.expiring event, so the
warning pass has nothing left to do for it). Their events (the credit's
entry.posted, the grant.expiring) are not planted: expiry never reads
them, and a month-old event is relayed or pruned. Those grants were made
long ago, so the tables are vacuumed and analyzed after the planting, as
autovacuum would have left them. Making them through the write path instead would cost
about as much setup time as the measurement per round, and a wait for
their expiry; tests/bench/test_expiry.py checks that a planted grant reads
and expires like one grant_credits made, and that verify() stays empty.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from bench.measure import Sample, sample_from_latencies
from ledger_py.migrate import migrate

MAX_ROWS = 1000  # per expire_grants call, as `ledger grants expire` calls it
GRANT_AMOUNT = 100
OPERATION = "PROMO_CREDIT"  # the core operation of expiring grants
SPACING_MS = 10  # between two planted grants' expiries

PLANT = """
WITH op AS (
    SELECT o.expires_after, o.grant_priority FROM ledger.operations o
    WHERE o.app = 'core' AND o.operation = %(operation)s),
owners AS (
    SELECT %(prefix)s || g AS owner_id,
           now() - interval '1 second' - (%(count)s - g) * %(spacing)s * interval '1 millisecond'
               AS expires_at
    FROM generate_series(1, %(count)s) g),
made AS (
    SELECT w.owner_id, w.expires_at, w.expires_at - op.expires_after AS made_at, op.grant_priority
    FROM owners w, op),
a AS (
    INSERT INTO ledger.accounts (owner_id, balance, created_at, updated_at, last_seq, next_expiry)
    SELECT m.owner_id, %(amount)s, m.made_at, m.made_at, 1, m.expires_at FROM made m
    RETURNING owner_id),
e AS (
    INSERT INTO ledger.entries (owner_id, seq, app, operation, amount, balance, idempotency_key,
                                fingerprint, metadata, created_at, created_by)
    SELECT m.owner_id, 1, 'bench', %(operation)s, %(amount)s, %(amount)s, 'promo-' || m.owner_id,
           ledger._fingerprint(jsonb_build_array('grant_credits', m.owner_id, %(operation)s,
                                                 %(amount)s::numeric, NULL::timestamptz,
                                                 NULL::integer, '{}'::jsonb)),
           '{}', m.made_at, session_user
    FROM made m JOIN a USING (owner_id)
    RETURNING owner_id, entry_id, created_at)
INSERT INTO ledger.grants (owner_id, entry_id, seq, app, operation, amount, remaining, priority,
                           expires_at, created_at, expiring_notified)
SELECT e.owner_id, e.entry_id, 1, 'bench', %(operation)s, %(amount)s, %(amount)s, m.grant_priority,
       m.expires_at, e.created_at, true
FROM e JOIN made m USING (owner_id)
"""


def prepare_database(url: str) -> None:
    """The expiry scenario's own database: migrated, with the app `bench`
    and nothing else, so that only the planted owners are due."""
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT ledger.define_app('bench', 'benchmarks')")


def plant_due_grants(url: str, prefix: str, count: int) -> None:
    """`count` owners `<prefix>1`.. each with one PROMO_CREDIT grant already
    past its expiry and not yet expired (setup, not measured)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            PLANT,
            {
                "prefix": prefix,
                "count": count,
                "amount": GRANT_AMOUNT,
                "operation": OPERATION,
                "spacing": SPACING_MS,
            },
        )
        conn.execute("VACUUM ANALYZE ledger.accounts, ledger.entries, ledger.grants")


def _due_left(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM ledger.accounts a WHERE a.next_expiry <= clock_timestamp())"
    ).fetchone()
    return bool(row and row[0])


def expire_all(url: str, sessions: int, max_rows: int = MAX_ROWS) -> tuple[Sample, dict[str, Any]]:
    """Call expire_grants(max_rows) from `sessions` connections at once, each
    call its own transaction, until no owner has a due grant. The rate is
    grants expired per second of wall time; the latencies are per call."""
    expired = [0] * sessions
    latencies: list[list[float]] = [[] for _ in range(sessions)]
    errors: list[BaseException] = []
    conns = [psycopg.connect(url, autocommit=True) for _ in range(sessions)]
    start = threading.Barrier(sessions + 1)

    def work(i: int) -> None:
        conn = conns[i]
        try:
            start.wait()
            while True:
                t0 = time.perf_counter()
                row = conn.execute("SELECT ledger.expire_grants(max_rows => %s)", (max_rows,))
                done = int(row.fetchone()[0])  # type: ignore[index]
                latencies[i].append((time.perf_counter() - t0) * 1000.0)
                expired[i] += done
                # 0 can mean that the other sessions hold every owner this
                # call looked at: stop only when nothing is due any more.
                if done == 0 and not _due_left(conn):
                    return
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(sessions)]
    try:
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        for conn in conns:
            conn.close()
    if errors:
        raise errors[0]
    total = sum(expired)
    sample = sample_from_latencies(
        [x for per in latencies for x in per], wall, rate=total / wall if wall > 0 else 0.0
    )
    # sample.count is the number of calls; the grants are the unit here.
    sample = Sample(
        rate=sample.rate,
        p50_ms=sample.p50_ms,
        p99_ms=sample.p99_ms,
        count=total,
        seconds=wall,
        errors=0,
    )
    return sample, {"calls": sum(len(x) for x in latencies), "expired_per_session": expired}
