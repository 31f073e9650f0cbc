"""One call is one statement (one round trip), and prepared statements
follow prepare_threshold.

libpq's protocol trace of the pool's only connection shows what a call
sends: exactly one Sync (extended protocol) and no simple Query (no BEGIN,
COMMIT or SET around it).
"""

from __future__ import annotations

import re
import tempfile
from typing import Any

import psycopg
import pytest
from psycopg import pq

from .conftest import make_ledger


async def _async_pgconn(pool: Any) -> pq.abc.PGconn:
    async with pool.connection() as conn:
        return conn.pgconn  # type: ignore[no-any-return]


def only_pgconn(instance: Any, kind: str) -> pq.abc.PGconn:
    if kind == "sync":
        with instance.pool.connection() as conn:
            return conn.pgconn  # type: ignore[no-any-return]
    return instance.run(_async_pgconn(instance.pool))  # type: ignore[no-any-return]


def traced(pgconn: pq.abc.PGconn, action: Any) -> list[str]:
    """The frontend messages libpq sent while action() ran."""
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            action()
        finally:
            pgconn.untrace()
        trace.seek(0)
        lines = trace.read().decode("utf-8", "replace").splitlines()
    return [line for line in lines if line.startswith("F\t")]


def message_types(lines: list[str]) -> list[str]:
    return [re.split(r"\t", line)[2].split(" ")[0] for line in lines]


@pytest.mark.parametrize("prepare_threshold", [None, 0, 5])
def test_one_call_is_one_round_trip(db_url: str, kind: str, prepare_threshold: int | None) -> None:
    if not hasattr(pq.PGconn, "set_trace_flags") or pq.version() < 140000:
        pytest.skip("libpq tracing flags need libpq 14")
    instance = make_ledger(
        kind, db_url, min_size=1, max_size=1, prepare_threshold=prepare_threshold
    )
    try:
        # Past the threshold, so both statements are prepared by now (when
        # preparing, psycopg's first use adds one Parse round trip).
        for i in range(6):
            instance.post_entry(
                owner_id="o",
                app="core",
                operation="CREDIT_ADD",
                idempotency_key=f"warm{i}",
                amount=1,
            )
            instance.get_balance(owner_id="o")
        pgconn = only_pgconn(instance, kind)
        for i in range(3):
            sent = traced(
                pgconn,
                lambda i=i: instance.post_entry(
                    owner_id="o",
                    app="core",
                    operation="CREDIT_ADD",
                    idempotency_key=f"k{i}",
                    amount=1,
                ),
            )
            kinds = message_types(sent)
            assert kinds.count("Sync") == 1, sent
            assert "Query" not in kinds, sent
            # Prepared: only Bind/Execute travel; unprepared: an unnamed Parse each time.
            assert ("Parse" in kinds) is (prepare_threshold is None), sent
        balance = traced(pgconn, lambda: instance.get_balance(owner_id="o"))
        assert message_types(balance).count("Sync") == 1 and "Query" not in message_types(balance)
    finally:
        instance.close()


@pytest.mark.parametrize(("prepare_threshold", "prepared"), [(None, False), (0, True), (2, True)])
def test_prepare_threshold_reaches_the_connections(
    db_url: str, kind: str, prepare_threshold: int | None, prepared: bool
) -> None:
    instance = make_ledger(
        kind, db_url, min_size=1, max_size=1, prepare_threshold=prepare_threshold
    )
    try:
        for _ in range(3):
            instance.get_balance(owner_id="o")
        # Ask on the same (only) connection which statements it has prepared.
        rows = instance.list_entries(owner_id="o")  # (runs on that connection too)
        assert rows == []
        statements = pgconn_prepared_statements(instance, kind)
        assert any("ledger.get_balance" in s for s in statements) is prepared
    finally:
        instance.close()


async def _async_prepared(pool: Any) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in await cur.fetchall()]


def pgconn_prepared_statements(instance: Any, kind: str) -> list[str]:
    if kind == "sync":
        with instance.pool.connection() as conn:
            return [row[0] for row in conn.execute("SELECT statement FROM pg_prepared_statements")]
    return instance.run(_async_prepared(instance.pool))  # type: ignore[no-any-return]


def test_conn_argument_sends_one_statement_and_no_commit(db_url: str) -> None:
    from ledger_py import Ledger

    with Ledger(db_url, min_size=1, max_size=1) as ledger, psycopg.connect(db_url) as app_conn:
        app_conn.execute("SELECT 1")  # the app's transaction is open
        sent = traced(
            app_conn.pgconn,
            lambda: ledger.post_entry(
                owner_id="o",
                app="core",
                operation="CREDIT_ADD",
                idempotency_key="k",
                amount=1,
                conn=app_conn,
            ),
        )
        assert message_types(sent).count("Sync") == 1 and "Query" not in message_types(sent)
        assert app_conn.info.transaction_status == pq.TransactionStatus.INTRANS
        app_conn.rollback()
