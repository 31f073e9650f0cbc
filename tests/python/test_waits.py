"""Every wait of a ledger call is bounded.

A caller that joins a transaction with `conn=`, posts an entry and keeps the
transaction open holds the owner's account row (which also orders every
request of the owner's idempotency keys). Another call about that owner
must not wait for it without
limit: the pool's connections carry lock_timeout and statement_timeout as
connection options, so the call raises LockTimeout / StatementTimeout (both
LedgerBusy), writes nothing, and a retry with the same key works once the
lock is free. Each blocking wait here lasts well under two seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from ledger_py import Ledger, LedgerBusy, LockTimeout, StatementTimeout

from .conftest import make_ledger

LOCK_TIMEOUT = 0.3  # seconds: long enough to be a real wait, short for the suite


@contextmanager
def open_transaction_holding(db_url: str, owner: str, key: str) -> Iterator[Any]:
    """A caller's transaction that posted a credit for owner with key and is still open."""
    with (
        psycopg.connect(db_url) as held,
        Ledger(db_url, min_size=1, max_size=1, lock_timeout=None) as side,
    ):
        side.post_entry(
            owner_id=owner,
            app="core",
            operation="CREDIT_ADD",
            idempotency_key=key,
            amount=10,
            conn=held,
        )
        yield held
        held.rollback()


def entries_with_key(db_url: str, key: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger.entries WHERE idempotency_key = %s", (key,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def spend(ledger: Any, owner: str, key: str) -> Any:
    return ledger.post_entry(
        owner_id=owner, app="core", operation="CREDIT_SPEND", idempotency_key=key, amount=3
    )


def test_a_debit_behind_an_open_transaction_gets_lock_timeout_then_a_retry_works(
    kind: str, db_url: str
) -> None:
    ledger = make_ledger(kind, db_url, lock_timeout=LOCK_TIMEOUT)
    try:
        ledger.post_entry(
            owner_id="busy", app="core", operation="CREDIT_ADD", idempotency_key="fund", amount=9
        )
        with open_transaction_holding(db_url, "busy", "held-credit") as held:
            started = time.monotonic()
            with pytest.raises(LockTimeout) as caught:
                spend(ledger, "busy", "spend-1")
            waited = time.monotonic() - started
            assert LOCK_TIMEOUT <= waited < LOCK_TIMEOUT + 1.5
            assert isinstance(caught.value, LedgerBusy)
            assert caught.value.code == "lock_timeout" and caught.value.sqlstate == "55P03"
            assert isinstance(caught.value.__cause__, psycopg.errors.LockNotAvailable)
            assert entries_with_key(db_url, "spend-1") == 0  # nothing written
            # Other owners are not held up meanwhile.
            assert ledger.get_balance(owner_id="someone-else").balance == 0
            held.commit()  # the lock is free
        first = spend(ledger, "busy", "spend-1")  # the same key, a top-level retry
        assert not first.replayed and first.balance == 9 + 10 - 3
        assert spend(ledger, "busy", "spend-1").replayed
        assert entries_with_key(db_url, "spend-1") == 1
    finally:
        ledger.close()


def test_a_retry_of_a_key_in_an_open_transaction_waits_bounded(kind: str, db_url: str) -> None:
    """A retry of the key another open transaction just used, for the same
    owner, waits on that owner's row lock (keys are ordered by it; there is no
    advisory key lock any more), which lock_timeout bounds. The same key for
    another owner is another request and does not wait at all."""
    ledger = make_ledger(kind, db_url, lock_timeout=LOCK_TIMEOUT)
    try:
        with open_transaction_holding(db_url, "first-owner", "shared-key"):
            with pytest.raises(LockTimeout):
                ledger.post_entry(
                    owner_id="first-owner",
                    app="core",
                    operation="CREDIT_ADD",
                    idempotency_key="shared-key",
                    amount=10,
                )
            other = ledger.post_entry(
                owner_id="other-owner",
                app="core",
                operation="CREDIT_ADD",
                idempotency_key="shared-key",
                amount=1,
            )
            assert other.replayed is False
        assert ledger.get_balance(owner_id="first-owner").balance == 0
    finally:
        ledger.close()


def test_statement_timeout_bounds_what_lock_timeout_does_not(kind: str, db_url: str) -> None:
    ledger = make_ledger(kind, db_url, lock_timeout=None, statement_timeout=LOCK_TIMEOUT)
    try:
        ledger.post_entry(
            owner_id="slow", app="core", operation="CREDIT_ADD", idempotency_key="fund", amount=9
        )
        with open_transaction_holding(db_url, "slow", "held"):
            with pytest.raises(StatementTimeout) as caught:
                spend(ledger, "slow", "spend-slow")
        assert caught.value.code == "statement_timeout" and caught.value.sqlstate == "57014"
        assert isinstance(caught.value, LedgerBusy)
        assert entries_with_key(db_url, "spend-slow") == 0
    finally:
        ledger.close()


def test_pool_connections_carry_the_timeouts_and_keep_the_urls_options(db_url: str) -> None:
    url = db_url + ("&" if "?" in db_url else "?") + "options=-c%20application_name%3Dmine"
    with Ledger(url, lock_timeout=2.5, statement_timeout=30) as ledger:
        with ledger.pool.connection() as conn:
            shown = conn.execute(
                "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'),"
                " current_setting('application_name')"
            ).fetchone()
    assert shown == ("2500ms", "30s", "mine")
    with Ledger(db_url, lock_timeout=None, statement_timeout=None) as ledger:
        with ledger.pool.connection() as conn:
            assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)


def test_inside_a_callers_transaction_its_own_setting_applies_and_the_error_aborts_it(
    db_url: str,
) -> None:
    """With conn=, the caller's connection settings apply (SET LOCAL
    lock_timeout here); the LockTimeout aborts the caller's transaction."""
    with Ledger(db_url, lock_timeout=None) as ledger:
        ledger.post_entry(
            owner_id="caller", app="core", operation="CREDIT_ADD", idempotency_key="fund", amount=9
        )
    with (
        Ledger(db_url, lock_timeout=None) as ledger,
        open_transaction_holding(db_url, "caller", "held"),
        psycopg.connect(db_url) as mine,
    ):
        mine.execute("SET LOCAL lock_timeout = '300ms'")
        with pytest.raises(LockTimeout):
            ledger.post_entry(
                owner_id="caller",
                app="core",
                operation="CREDIT_SPEND",
                idempotency_key="in-txn",
                amount=1,
                conn=mine,
            )
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            mine.execute("SELECT 1")
        mine.rollback()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_a_timeout_that_would_mean_no_limit_is_refused(db_url: str, bad: float) -> None:
    """PostgreSQL reads 0 as "no limit": None says that, a number must be positive."""
    with pytest.raises(ValueError, match="lock_timeout"):
        Ledger(db_url, lock_timeout=bad)
    with Ledger(db_url, lock_timeout=0.0001) as tiny:
        assert "lock_timeout=1 " in str(tiny.pool.conninfo) + " "
