"""conn=: an app's own rows and the ledger entry commit or roll back together.

The app here creates its own table, inserts its row and posts an entry in
one transaction on its own connection. A rollback leaves neither the table,
the row nor the entry; a commit leaves all of them. The wrapper never
commits or rolls back a connection it was given.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from ledger_py import AsyncLedger, InsufficientCredits, Ledger, LedgerUnavailable

CREATE = "CREATE TABLE shop_orders (order_id int PRIMARY KEY, owner_id text NOT NULL)"
INSERT = "INSERT INTO shop_orders VALUES (%s, %s)"


def table_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]] | None:
    exists = conn.execute("SELECT to_regclass('public.shop_orders') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return None
    return conn.execute("SELECT order_id, owner_id FROM shop_orders").fetchall()


def test_rollback_leaves_neither_commit_leaves_both(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    with Ledger(db_url, min_size=1, max_size=2) as ledger, psycopg.connect(db_url) as app_conn:
        # Rolled back: nothing of it remains.
        with pytest.raises(RuntimeError), app_conn.transaction():
            app_conn.execute(CREATE)
            app_conn.execute(INSERT, (1, "olga"))
            entry = ledger.post_entry(
                owner_id="olga",
                app="core",
                operation="CREDIT_ADD",
                idempotency_key="order-1",
                amount=7,
                conn=app_conn,
            )
            assert entry.balance == 7
            # Not visible outside the transaction yet, nor committed by the wrapper.
            assert app_conn.info.transaction_status == TransactionStatus.INTRANS
            assert ledger.get_balance(owner_id="olga").balance == 0
            raise RuntimeError("the app's work failed")
        assert table_rows(conn) is None
        assert ledger.get_balance(owner_id="olga").balance == 0
        assert ledger.list_entries(owner_id="olga") == []

        # Committed: the table, the row and the entry are all there. The key
        # of the rolled-back call is free again.
        with app_conn.transaction():
            app_conn.execute(CREATE)
            app_conn.execute(INSERT, (1, "olga"))
            entry = ledger.post_entry(
                owner_id="olga",
                app="core",
                operation="CREDIT_ADD",
                idempotency_key="order-1",
                amount=7,
                conn=app_conn,
            )
        assert entry.replayed is False
        assert table_rows(conn) == [(1, "olga")]
        assert ledger.get_balance(owner_id="olga").balance == 7
        assert [e.entry_id for e in ledger.list_entries(owner_id="olga")] == [entry.entry_id]


def test_a_ledger_error_inside_a_savepoint_keeps_the_transaction(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    with Ledger(db_url, min_size=1, max_size=2) as ledger, psycopg.connect(db_url) as app_conn:
        with app_conn.transaction():
            app_conn.execute(CREATE)
            with pytest.raises(InsufficientCredits), app_conn.transaction():
                ledger.post_entry(
                    owner_id="pia",
                    app="core",
                    operation="CREDIT_SPEND",
                    idempotency_key="spend-1",
                    amount=3,
                    conn=app_conn,
                )
            app_conn.execute(INSERT, (2, "pia"))
        assert table_rows(conn) == [(2, "pia")]


def test_reads_see_the_callers_uncommitted_writes(db_url: str) -> None:
    with Ledger(db_url, min_size=1, max_size=2) as ledger, psycopg.connect(db_url) as app_conn:
        ledger.post_entry(
            owner_id="quinn",
            app="core",
            operation="CREDIT_ADD",
            idempotency_key="k",
            amount=4,
            conn=app_conn,
        )
        assert ledger.get_balance(owner_id="quinn", conn=app_conn).balance == 4
        assert ledger.get_balance(owner_id="quinn").balance == 0
        app_conn.rollback()
        assert ledger.get_balance(owner_id="quinn", conn=app_conn).balance == 0


def test_async_rollback_leaves_neither_commit_leaves_both(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    async def scenario() -> None:
        async with AsyncLedger(db_url, min_size=1, max_size=2) as ledger:
            app_conn = await psycopg.AsyncConnection.connect(db_url)
            try:
                with pytest.raises(RuntimeError):
                    async with app_conn.transaction():
                        await app_conn.execute(CREATE)
                        await app_conn.execute(INSERT, (1, "rita"))
                        await ledger.post_entry(
                            owner_id="rita",
                            app="core",
                            operation="CREDIT_ADD",
                            idempotency_key="order-1",
                            amount=7,
                            conn=app_conn,
                        )
                        assert app_conn.info.transaction_status == TransactionStatus.INTRANS
                        assert (await ledger.get_balance(owner_id="rita")).balance == 0
                        raise RuntimeError("the app's work failed")
                assert table_rows(conn) is None
                assert (await ledger.get_balance(owner_id="rita")).balance == 0

                async with app_conn.transaction():
                    await app_conn.execute(CREATE)
                    await app_conn.execute(INSERT, (1, "rita"))
                    await ledger.post_entry(
                        owner_id="rita",
                        app="core",
                        operation="CREDIT_ADD",
                        idempotency_key="order-1",
                        amount=7,
                        conn=app_conn,
                    )
                assert table_rows(conn) == [(1, "rita")]
                assert (await ledger.get_balance(owner_id="rita")).balance == 7
            finally:
                await app_conn.close()

    asyncio.run(scenario())


def test_ledger_over_an_existing_pool(db_url: str) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(db_url, min_size=1, max_size=2, open=True) as pool:
        # The app's pool is not in autocommit: each call is then its own
        # transaction, committed when the connection goes back.
        with Ledger(pool=pool) as ledger:
            ledger.post_entry(
                owner_id="sam", app="core", operation="CREDIT_ADD", idempotency_key="k", amount=2
            )
        assert not pool.closed  # the app's pool stays open
        with pool.connection() as c:
            row = c.execute("SELECT balance FROM ledger.accounts WHERE owner_id = 'sam'").fetchone()
        assert row == (2,)


def test_constructor_needs_exactly_one_source() -> None:
    with pytest.raises(TypeError):
        Ledger()
    with pytest.raises(TypeError):
        AsyncLedger()


def test_both_clients_open_their_pool_at_the_first_call(db_url: str) -> None:
    """The constructor does no I/O (a Ledger can be built before a fork, an
    AsyncLedger outside a running loop); the first call opens the pool."""
    ledger = Ledger(db_url, min_size=1, max_size=1)
    try:
        assert ledger.pool.closed
        assert ledger.get_balance(owner_id="nobody").balance == 0
        assert not ledger.pool.closed
    finally:
        ledger.close()
    assert ledger.pool.closed

    later = AsyncLedger(db_url, min_size=1, max_size=1)
    assert later.pool.closed

    async def scenario() -> None:
        try:
            assert (await later.get_balance(owner_id="nobody")).balance == 0
            assert not later.pool.closed
        finally:
            await later.close()

    asyncio.run(scenario())
    assert later.pool.closed


def test_a_pool_passed_in_is_opened_only_on_request(db_url: str) -> None:
    """Ledger(pool=...) leaves the application's pool as it is until `with`
    or open() (then it opens it); close() never closes it."""
    from psycopg_pool import ConnectionPool

    pool: ConnectionPool[Any] = ConnectionPool(db_url, min_size=1, max_size=1, open=False)
    try:
        ledger = Ledger(pool=pool)
        with pytest.raises(LedgerUnavailable):
            ledger.get_balance(owner_id="nobody")
        with ledger:
            assert ledger.get_balance(owner_id="nobody").balance == 0
        assert not pool.closed
    finally:
        pool.close()


def test_a_failed_call_on_an_existing_pool_ends_its_transaction(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On a pool that is not autocommit, a call that fails rolls its
    transaction back before the connection goes back (as `with conn` would):
    the pool gets an idle connection, not one it must repair, and the next
    call on it works."""
    from psycopg_pool import ConnectionPool

    with ConnectionPool(db_url, min_size=1, max_size=1, open=True) as pool:
        with Ledger(pool=pool) as ledger, caplog.at_level("WARNING", logger="psycopg.pool"):
            with pytest.raises(InsufficientCredits):
                ledger.post_entry(
                    owner_id="ula", app="core", operation="CREDIT_SPEND", idempotency_key="d"
                )
            ledger.post_entry(
                owner_id="ula", app="core", operation="CREDIT_ADD", idempotency_key="c", amount=3
            )
            assert ledger.get_balance(owner_id="ula").balance == 3
        assert not [r for r in caplog.records if "rolling back" in r.getMessage()]
