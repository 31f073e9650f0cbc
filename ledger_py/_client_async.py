"""AsyncLedger, the one hand-written client.

`Ledger` (ledger_py/_client_sync.py) is generated from this file by
tools/async_to_sync.py (`make generate`; `make lint` fails when it is out of
date): change the client here, never there. The contract both follow is
described in ledger_py/client.py; what the generator rewrites (async def,
await, async with, the Async names) and the one marker it knows, `_ASYNC`,
are described in the generator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from . import queries as q
from ._client_common import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_PREPARE_THRESHOLD,
    DEFAULT_RECONNECT_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    Json,
    _broken_connection,
    _check_construction,
    _has_input,
    _json,
    _pool_kwargs,
    _where_of_pool,
)
from .conninfo import libpq_url, with_timeouts
from .errors import LedgerUnavailable, Where, ledger_error, translate_errors
from .results import (
    ApiKey,
    App,
    Balance,
    BalancePoint,
    BusyOwner,
    ConsoleUser,
    DailyActivity,
    Discrepancy,
    Entry,
    Event,
    Grant,
    HistoryEntry,
    Hold,
    HoldRecord,
    JournalEntry,
    KeyHolder,
    MetricsSnapshot,
    NewWebhookEndpoint,
    OpenHold,
    Operation,
    OperatorAction,
    ReportRow,
    SignInAttempt,
    Spending,
    Transfer,
    VerifyRun,
    WebhookAttempt,
    WebhookClaim,
    WebhookDelivery,
    WebhookEndpoint,
)

# The generator's marker: `if _ASYNC: <asyncio code> else: <synchronous code>`
# (or `if not _ASYNC: <synchronous code>`) keeps only the synchronous branch in
# the generated module. Here it is always true.
_ASYNC = True


async def _rollback_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    """End a failed call's transaction on a connection of a pool that is not
    autocommit, as psycopg's `with conn` does (a failure to roll back is
    left to the pool, which discards such a connection)."""
    try:
        await conn.rollback()
    except psycopg.Error:
        pass


class AsyncLedger:
    """The ledger for asyncio code: one coroutine method per SQL function.

    AsyncLedger(url, min_size=1, max_size=10, prepare_threshold=5, timeout=10.0)
        builds and owns a psycopg_pool.AsyncConnectionPool (autocommit
        connections); close() or leaving the `async with` block closes it.
    AsyncLedger(pool=existing_pool)
        uses an application's pool as it is configured; close() leaves it open.

    Opening: the constructor does no I/O (so the object can be built outside
    a running event loop, or before a fork). The pool opens on entering the
    `async with` block, on `await open()`, or at the first call, whichever
    comes first; a pool passed in opens only by `async with` or `await open()`.

    `timeout` is how long a call waits for a pool connection before raising
    LedgerUnavailable. `lock_timeout` (default 5 s) and `statement_timeout`
    (default 60 s) bound every statement of the pool's connections (seconds;
    None leaves the server's setting): LockTimeout / StatementTimeout, both
    LedgerBusy, when one runs out. With pool= or conn=, the connection's own
    settings apply. `reconnect_timeout` (default 5 s) is how long the pool
    keeps retrying a refused connection before leaving it to the next call:
    short, so that calls find connections within about 2 s of the database
    coming back after an outage of any length.
    """

    if not _ASYNC:
        __doc__ = """The ledger for synchronous code (threads welcome: the pool is shared).

        Ledger(url, min_size=1, max_size=10, prepare_threshold=5, timeout=10.0)
            builds and owns a psycopg_pool.ConnectionPool (autocommit
            connections); close() or leaving the `with` block closes it.
        Ledger(pool=existing_pool)
            uses an application's pool as it is configured; close() leaves it open.

        Opening: the constructor does no I/O (so the object can be built
        before a fork, e.g. in a server's master process). The pool opens on
        entering the `with` block, on open(), or at the first call, whichever
        comes first; a pool passed in opens only by `with` or open().

        `timeout` is how long a call waits for a pool connection before raising
        LedgerUnavailable. `lock_timeout` (default 5 s) and `statement_timeout`
        (default 60 s) bound every statement of the pool's connections (seconds;
        None leaves the server's setting): LockTimeout / StatementTimeout, both
        LedgerBusy, when one runs out. With pool= or conn=, the connection's own
        settings apply. `reconnect_timeout` (default 5 s) is how long the pool
        keeps retrying a refused connection before leaving it to the next call:
        short, so that calls find connections within about 2 s of the database
        coming back after an outage of any length.
        """

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        min_size: int = 1,
        max_size: int = 10,
        prepare_threshold: int | None = DEFAULT_PREPARE_THRESHOLD,
        timeout: float = 10.0,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        name: str = "ledger",
    ) -> None:
        _check_construction(url, pool)
        if pool is None:
            assert url is not None
            pool = AsyncConnectionPool(
                with_timeouts(libpq_url(url), lock_timeout, statement_timeout),
                min_size=min_size,
                max_size=max_size,
                kwargs=_pool_kwargs(prepare_threshold),
                timeout=timeout,
                reconnect_timeout=reconnect_timeout,
                open=False,
                name=name,
            )
            self._owns_pool = True
        else:
            self._owns_pool = False
        self._pool: AsyncConnectionPool[Any] = pool
        self._where = _where_of_pool(pool)
        # Whether a call still has to open the pool first (never for a pool
        # passed in: the application opens its own).
        self._opened = not self._owns_pool

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """The connection pool (e.g. to run an app's own statements beside the ledger's)."""
        return self._pool

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool (a no-op if it is open); with wait=True, wait until it
        has min_size connections (LedgerUnavailable when the database cannot
        be reached in time)."""
        with translate_errors(self._where):
            await self._pool.open(wait=wait, timeout=timeout)
        self._opened = True

    async def close(self) -> None:
        """Close the pool if this AsyncLedger built it."""
        if self._owns_pool:
            await self._pool.close()

    async def __aenter__(self) -> AsyncLedger:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the one way a statement is run ------------------------------------

    async def _rows(
        self, call: q.Call, conn: psycopg.AsyncConnection[Any] | None, given: Mapping[str, Any]
    ) -> list[Any]:
        params = call.params(given)
        query = call.sql(params)
        if conn is not None:
            with translate_errors(lambda: Where.from_connection(conn), params):
                async with conn.cursor(row_factory=call.row_factory) as cur:
                    await cur.execute(query, params)
                    return await cur.fetchall()
        if not self._opened:
            await self.open()
        pool = self._pool
        try:
            # The pool's connection() inlined: getconn/putconn, and the
            # commit (or rollback) its `with conn` does only for a pool
            # passed in that is not autocommit; errors are translated only
            # once raised (ledger_error). Each costs the hot path less than
            # the context managers it replaces.
            last = pool.max_size
            for attempt in range(last + 1):
                pooled = await pool.getconn()
                try:
                    if (
                        attempt < last
                        and _has_input(pooled)
                        and await self._discard_if_dead(pooled)
                    ):
                        continue
                    async with pooled.cursor(row_factory=call.row_factory) as cur:
                        await cur.execute(query, params)
                        rows: list[Any] = await cur.fetchall()
                    if not pooled.autocommit:
                        await pooled.commit()
                    return rows
                except BaseException:
                    if not pooled.autocommit and not pooled.closed:
                        await _rollback_quietly(pooled)
                    raise
                finally:
                    await pool.putconn(pooled)
            raise AssertionError("unreachable: the last attempt is not checked")
        except (psycopg.Error, UnicodeEncodeError) as exc:
            error = ledger_error(exc, self._where, params)
            if error is None:
                raise
            error.__cause__ = exc
            # The server went away: every idle connection is probably dead.
            # drain() replaces them without a round trip, so the first call
            # after the server is back gets a fresh connection.
            if (
                isinstance(error, LedgerUnavailable)
                and self._owns_pool
                and _broken_connection(error)
                and not pool.closed
            ):
                await pool.drain()
            raise error from exc

    @asynccontextmanager
    async def connection(
        self, timeout: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pool connection that is alive as far as can be known without a
        round trip (psycopg errors pass untranslated: wrap the block in
        errors.translate_errors). `timeout`: the pool's by default.

        A connection with input waiting while idle is checked with an empty
        statement; one that fails it is closed (the pool replaces it) and,
        since the server likely ended every idle one, the pool is drained.
        Nothing the caller sends has been sent yet, so trying the next
        connection is safe for any call."""
        if not self._opened:
            await self.open()
        last = self._pool.max_size
        for attempt in range(last + 1):
            async with self._pool.connection(timeout=timeout) as conn:
                if attempt < last and _has_input(conn) and await self._discard_if_dead(conn):
                    continue
                yield conn
                return

    async def _discard_if_dead(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Check a connection that had input waiting with an empty statement;
        if it fails, close it (the pool replaces it when it comes back) and
        drain the pool (its other idle connections likely died too)."""
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            await conn.close()
            if self._owns_pool and not self._pool.closed:
                await self._pool.drain()
            return True
        return False

    async def _one(
        self, call: q.Call, conn: psycopg.AsyncConnection[Any] | None, given: Mapping[str, Any]
    ) -> Any:
        rows = await self._rows(call, conn, given)
        return rows[0]

    # -- apps and operations (ledger_owner) ---------------------------------

    async def define_app(
        self,
        *,
        app: str,
        description: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> App:
        """Register an app (idempotent; a description given replaces the stored one)."""
        result: App = await self._one(q.DEFINE_APP, conn, {"app": app, "description": description})
        return result

    async def define_operation(
        self,
        *,
        app: str,
        operation: str,
        direction: str,
        default_amount: int | None = None,
        min_amount: int | None = None,
        max_amount: int | None = None,
        caller_sets_amount: bool | None = None,
        limit_per: str | None = None,
        description: str | None = None,
        expires_after: timedelta | None = None,
        grant_priority: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Operation:
        """Register or update an operation of an app (None: the SQL default).
        For a credit operation, expires_after is how long each of its grants
        lasts (None: forever) and grant_priority the order its grants are
        spent in (lower first)."""
        result: Operation = await self._one(
            q.DEFINE_OPERATION,
            conn,
            {
                "app": app,
                "operation": operation,
                "direction": direction,
                "default_amount": default_amount,
                "min_amount": min_amount,
                "max_amount": max_amount,
                "caller_sets_amount": caller_sets_amount,
                "limit_per": limit_per,
                "description": description,
                "expires_after": expires_after,
                "grant_priority": grant_priority,
            },
        )
        return result

    async def list_operations(
        self, *, app: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[Operation]:
        """The operations the app may post (core's and its own), by name."""
        return await self._rows(q.LIST_OPERATIONS, conn, {"app": app})

    # -- entries -------------------------------------------------------------

    async def post_entry(
        self,
        *,
        owner_id: str,
        app: str,
        operation: str,
        idempotency_key: str,
        amount: int | None = None,
        metadata: Json = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Entry:
        """Write one entry (amount None: the operation's default); a replay of
        an earlier identical request returns it with replayed=True."""
        result: Entry = await self._one(
            q.POST_ENTRY,
            conn,
            {
                "owner_id": owner_id,
                "app": app,
                "operation": operation,
                "idempotency_key": idempotency_key,
                "amount": amount,
                "metadata": _json(metadata),
            },
        )
        return result

    async def post_entries(
        self,
        *,
        entries: Sequence[Mapping[str, Json]],
        idempotency_key: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[Entry]:
        """Write a batch (objects keyed like post_entry's parameters) all or
        nothing; results in input order. idempotency_key is the key of the
        request as a whole: items without their own key get '<key>:<index>',
        and the same key with another batch is IdempotencyConflict."""
        return await self._rows(
            q.POST_ENTRIES,
            conn,
            {"entries": _json(list(entries), "entries"), "idempotency_key": idempotency_key},
        )

    async def get_balance(
        self, *, owner_id: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> Balance:
        """Balance, held and available credits of an owner (zeros if unknown)."""
        result: Balance = await self._one(q.GET_BALANCE, conn, {"owner_id": owner_id})
        return result

    async def get_entry(
        self,
        *,
        entry_id: int,
        app: str | None = None,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> JournalEntry:
        """One journal entry (NotFound if none, or if it is not owner_id's);
        with app, another app's metadata and idempotency_key read None. Pass
        owner_id when known: the call goes straight to that owner's rows."""
        result: JournalEntry = await self._one(
            q.GET_ENTRY, conn, {"entry_id": entry_id, "app": app, "owner_id": owner_id}
        )
        return result

    async def list_entries(
        self,
        *,
        owner_id: str,
        after_id: int | None = None,
        max_rows: int | None = None,
        app: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[JournalEntry]:
        """An owner's history, newest first (by seq); the last entry_id as after_id gives the
        next page (an entry of that owner).
        With app, other apps' metadata and idempotency_key read None."""
        return await self._rows(
            q.LIST_ENTRIES,
            conn,
            {"owner_id": owner_id, "after_id": after_id, "max_rows": max_rows, "app": app},
        )

    async def balance_at(
        self, *, owner_id: str, at: datetime, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> int:
        """The owner's balance as of an instant."""
        return int((await self._one(q.BALANCE_AT, conn, {"owner_id": owner_id, "at": at}))[0])

    # -- holds ---------------------------------------------------------------

    async def create_hold(
        self,
        *,
        owner_id: str,
        app: str,
        operation: str,
        idempotency_key: str,
        amount: int | None = None,
        ttl: timedelta | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Hold:
        """Reserve what a debit of the operation would take (ttl None: the SQL default)."""
        result: Hold = await self._one(
            q.CREATE_HOLD,
            conn,
            {
                "owner_id": owner_id,
                "app": app,
                "operation": operation,
                "idempotency_key": idempotency_key,
                "amount": amount,
                "ttl": ttl,
            },
        )
        return result

    async def capture_hold(
        self,
        *,
        hold_id: int,
        app: str,
        amount: int | None = None,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Entry:
        """Turn an active hold into one debit entry (amount None: all of it).
        Pass the hold's owner_id when known: the call goes straight to that
        owner's rows (NotFound for a hold of another owner)."""
        result: Entry = await self._one(
            q.CAPTURE_HOLD,
            conn,
            {"hold_id": hold_id, "app": app, "amount": amount, "owner_id": owner_id},
        )
        return result

    async def release_hold(
        self,
        *,
        hold_id: int,
        app: str,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Hold:
        """Free an active hold (a repeated release is a replay); owner_id as in
        capture_hold."""
        result: Hold = await self._one(
            q.RELEASE_HOLD, conn, {"hold_id": hold_id, "app": app, "owner_id": owner_id}
        )
        return result

    async def get_hold(
        self,
        *,
        hold_id: int,
        app: str | None = None,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> HoldRecord:
        """One hold (NotFound if none, or if it is not owner_id's); with app,
        another app's idempotency_key reads None."""
        result: HoldRecord = await self._one(
            q.GET_HOLD, conn, {"hold_id": hold_id, "app": app, "owner_id": owner_id}
        )
        return result

    async def list_holds(
        self,
        *,
        owner_id: str,
        app: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[HoldRecord]:
        """An owner's holds, newest first; with app, other apps' idempotency_key reads None."""
        return await self._rows(q.LIST_HOLDS, conn, {"owner_id": owner_id, "app": app})

    # -- cross-owner work ------------------------------------------------------

    async def transfer(
        self,
        *,
        from_owner: str,
        to_owner: str,
        amount: int,
        app: str,
        idempotency_key: str,
        metadata: Json = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Transfer:
        """Move credits between two owners in one transaction."""
        result: Transfer = await self._one(
            q.TRANSFER,
            conn,
            {
                "from_owner": from_owner,
                "to_owner": to_owner,
                "amount": amount,
                "app": app,
                "idempotency_key": idempotency_key,
                "metadata": _json(metadata),
            },
        )
        return result

    async def reverse_entry(
        self,
        *,
        entry_id: int,
        app: str,
        idempotency_key: str,
        reason: str | None = None,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[Entry]:
        """Compensate an entry the app wrote (both legs of a transfer). The key
        belongs to the entry's owner (a transfer's sender); pass owner_id
        when known: the call goes straight to that owner's entry."""
        return await self._rows(
            q.REVERSE_ENTRY,
            conn,
            {
                "entry_id": entry_id,
                "app": app,
                "idempotency_key": idempotency_key,
                "reason": reason,
                "owner_id": owner_id,
            },
        )

    # -- grants ----------------------------------------------------------------

    async def grant_credits(
        self,
        *,
        owner_id: str,
        app: str,
        operation: str,
        idempotency_key: str,
        amount: int | None = None,
        expires_at: datetime | None = None,
        priority: int | None = None,
        metadata: Json = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Entry:
        """Credit the owner through a credit operation, as one grant:
        expires_at None takes the operation's expiry (the database refuses
        one later than the operation allows), priority None the operation's.
        A replay returns the first entry with replayed=True."""
        result: Entry = await self._one(
            q.GRANT_CREDITS,
            conn,
            {
                "owner_id": owner_id,
                "app": app,
                "operation": operation,
                "idempotency_key": idempotency_key,
                "amount": amount,
                "expires_at": expires_at,
                "priority": priority,
                "metadata": _json(metadata),
            },
        )
        return result

    async def list_grants(
        self,
        *,
        owner_id: str,
        include_closed: bool | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[Grant]:
        """The owner's active grants in the order debits spend them; with
        include_closed=True, then the spent, expired and voided ones, newest first."""
        return await self._rows(
            q.LIST_GRANTS, conn, {"owner_id": owner_id, "include_closed": include_closed}
        )

    async def void_grant(
        self,
        *,
        grant_id: int,
        app: str,
        idempotency_key: str,
        reason: str | None = None,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Entry:
        """Remove what is left of a grant the app made: the VOID entry (a
        negative amount). The key belongs to the grant's owner; pass owner_id
        when known: the call goes straight to that owner's grants."""
        result: Entry = await self._one(
            q.VOID_GRANT,
            conn,
            {
                "grant_id": grant_id,
                "app": app,
                "idempotency_key": idempotency_key,
                "reason": reason,
                "owner_id": owner_id,
            },
        )
        return result

    async def expire_grants(
        self,
        *,
        max_rows: int | None = None,
        warn_before: timedelta | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Write the EXPIRE entries of up to max_rows grants past their expiry
        (None: the SQL default), skipping owners another session holds; the
        number of grants expired. On the way: hold.expired events, balance
        alerts, and grant.expiring events warn_before ahead of an expiry
        (None: the SQL default, a day). Safe to run from several processes at once."""
        return int(
            (
                await self._one(
                    q.EXPIRE_GRANTS, conn, {"max_rows": max_rows, "warn_before": warn_before}
                )
            )[0]
        )

    async def list_spending(
        self,
        *,
        owner_id: str,
        entry_id: int | None = None,
        grant_id: int | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[Spending]:
        """Where the owner's credits went, newest first: with entry_id, what
        that entry took from or gave back to which grants; with grant_id,
        every movement of that grant."""
        return await self._rows(
            q.LIST_SPENDING,
            conn,
            {
                "owner_id": owner_id,
                "entry_id": entry_id,
                "grant_id": grant_id,
                "max_rows": max_rows,
            },
        )

    # -- events ----------------------------------------------------------------

    async def list_events(
        self,
        *,
        app: str,
        after: str | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[Event]:
        """The events after cursor `after` (None: from the oldest kept), oldest
        first; pass the last one's `cursor` as `after` for the next page. A
        reader that follows cursors never skips an event."""
        return await self._rows(
            q.LIST_EVENTS, conn, {"app": app, "after": after, "max_rows": max_rows}
        )

    async def relay_events(
        self, *, max_rows: int | None = None, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> int:
        """Give committed events their feed positions (one session at a time;
        0 when another is relaying); how many it relayed."""
        return int((await self._one(q.RELAY_EVENTS, conn, {"max_rows": max_rows}))[0])

    async def set_balance_alert(
        self, *, app: str, threshold: int, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[int]:
        """Register an alert threshold of available credits for the app
        (idempotent); the app's thresholds."""
        row = await self._one(q.SET_BALANCE_ALERT, conn, {"app": app, "threshold": threshold})
        return [int(t) for t in row[0]]

    async def remove_balance_alert(
        self, *, app: str, threshold: int, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[int]:
        """Remove one of the app's thresholds; the ones left."""
        rows = await self._rows(q.REMOVE_BALANCE_ALERT, conn, {"app": app, "threshold": threshold})
        return [int(row[0]) for row in rows]

    async def list_balance_alerts(
        self, *, app: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[int]:
        """The app's alert thresholds, lowest first."""
        row = await self._one(q.LIST_BALANCE_ALERTS, conn, {"app": app})
        return [int(t) for t in row[0]]

    # -- reports ---------------------------------------------------------------

    async def app_report(
        self,
        *,
        app: str,
        from_time: datetime,
        to_time: datetime,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[ReportRow]:
        """Per operation of the app's entries in [from_time, to_time)."""
        return await self._rows(
            q.APP_REPORT, conn, {"app": app, "from_time": from_time, "to_time": to_time}
        )

    async def verify(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[Discrepancy]:
        """Consistency findings; an empty list means healthy."""
        return await self._rows(q.VERIFY, conn, {})

    async def metrics_snapshot(
        self, *, recent: timedelta | None = None, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> MetricsSnapshot:
        """Monitoring figures: event and webhook backlogs, and what finished
        within `recent` (None: the SQL default, 5 minutes). Cheap: counts over
        indexes, for a scrape, not for every request."""
        result: MetricsSnapshot = await self._one(q.METRICS_SNAPSHOT, conn, {"recent": recent})
        return result

    # -- HTTP API keys (ledger_owner; api_key_lookup: ledger_app) --------------

    async def create_api_key(
        self,
        *,
        app: str,
        token_sha256: bytes,
        label: str | None = None,
        scope: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> ApiKey:
        """A new key of a registered app for the token with this hash
        (scope None: the SQL default, "app"); the database makes its key id.
        tokens.create_api_key makes the token and calls this."""
        result: ApiKey = await self._one(
            q.CREATE_API_KEY,
            conn,
            {"app": app, "token_sha256": token_sha256, "label": label, "scope": scope},
        )
        return result

    async def list_api_keys(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[ApiKey]:
        """Every key, active and revoked, oldest first."""
        return await self._rows(q.LIST_API_KEYS, conn, {})

    async def revoke_api_key(
        self, *, key_id: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """True when the key was active and is revoked now; False if unknown or revoked before."""
        return bool((await self._one(q.REVOKE_API_KEY, conn, {"key_id": key_id}))[0])

    async def api_key_lookup(
        self, *, token_sha256: bytes, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> KeyHolder | None:
        """The app and scope of the active key with this token hash
        (tokens.token_hash), or None (unknown or revoked)."""
        rows: list[KeyHolder] = await self._rows(
            q.API_KEY_LOOKUP, conn, {"token_sha256": token_sha256}
        )
        return rows[0] if rows else None

    # -- webhooks (sql/80_webhooks.sql) ----------------------------------------

    async def create_webhook_endpoint(
        self,
        *,
        app: str,
        url: str,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> NewWebhookEndpoint:
        """Register an endpoint of the app (event_types None: every type); the
        result carries its signing secret, shown only this once."""
        result: NewWebhookEndpoint = await self._one(
            q.CREATE_WEBHOOK_ENDPOINT,
            conn,
            {
                "app": app,
                "url": url,
                "event_types": None if event_types is None else list(event_types),
                "description": description,
            },
        )
        return result

    async def list_webhook_endpoints(
        self, *, app: str | None = None, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[WebhookEndpoint]:
        """The app's endpoints, oldest first (app None: every app's); never a secret."""
        return await self._rows(q.LIST_WEBHOOK_ENDPOINTS, conn, {"app": app})

    async def get_webhook_endpoint(
        self,
        *,
        endpoint_id: int,
        app: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> WebhookEndpoint:
        """One endpoint (NotFound if none, or another app's when app is given)."""
        result: WebhookEndpoint = await self._one(
            q.GET_WEBHOOK_ENDPOINT, conn, {"endpoint_id": endpoint_id, "app": app}
        )
        return result

    async def set_webhook_endpoint_active(
        self,
        *,
        endpoint_id: int,
        app: str,
        active: bool,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> WebhookEndpoint:
        """Disable (active False) or enable again an endpoint of the app."""
        result: WebhookEndpoint = await self._one(
            q.SET_WEBHOOK_ENDPOINT_ACTIVE,
            conn,
            {"endpoint_id": endpoint_id, "app": app, "active": active},
        )
        return result

    async def delete_webhook_endpoint(
        self, *, endpoint_id: int, app: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> WebhookEndpoint:
        """Delete an endpoint of the app with its deliveries and log; returns what it was."""
        result: WebhookEndpoint = await self._one(
            q.DELETE_WEBHOOK_ENDPOINT, conn, {"endpoint_id": endpoint_id, "app": app}
        )
        return result

    async def list_webhook_deliveries(
        self,
        *,
        endpoint_id: int,
        app: str | None = None,
        status: str | None = None,
        before_id: int | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[WebhookDelivery]:
        """An endpoint's deliveries, newest first; the last delivery_id as
        before_id gives the next page."""
        return await self._rows(
            q.LIST_WEBHOOK_DELIVERIES,
            conn,
            {
                "endpoint_id": endpoint_id,
                "app": app,
                "status": status,
                "before_id": before_id,
                "max_rows": max_rows,
            },
        )

    async def list_webhook_attempts(
        self,
        *,
        endpoint_id: int,
        app: str | None = None,
        event_id: int | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[WebhookAttempt]:
        """An endpoint's delivery log, newest attempt first (event_id: that event's)."""
        return await self._rows(
            q.LIST_WEBHOOK_ATTEMPTS,
            conn,
            {"endpoint_id": endpoint_id, "app": app, "event_id": event_id, "max_rows": max_rows},
        )

    async def resend_webhook_event(
        self,
        *,
        event_id: int,
        app: str,
        endpoint_id: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[WebhookDelivery]:
        """Send an event again to the app's endpoints it was sent to (or one of them)."""
        return await self._rows(
            q.RESEND_WEBHOOK_EVENT,
            conn,
            {"event_id": event_id, "app": app, "endpoint_id": endpoint_id},
        )

    async def fan_out_webhooks(
        self, *, max_rows: int | None = None, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> int:
        """The dispatcher's: write the deliveries of new events; how many events were read."""
        return int((await self._one(q.FAN_OUT_WEBHOOKS, conn, {"max_rows": max_rows}))[0])

    async def claim_webhook_deliveries(
        self,
        *,
        max_rows: int,
        lease: timedelta,
        per_endpoint: int | None = None,
        skip_endpoints: Sequence[int] | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[WebhookClaim]:
        """The dispatcher's: lease due deliveries, with what each attempt needs."""
        return await self._rows(
            q.CLAIM_WEBHOOK_DELIVERIES,
            conn,
            {
                "max_rows": max_rows,
                "lease": lease,
                "per_endpoint": per_endpoint,
                "skip_endpoints": None if skip_endpoints is None else list(skip_endpoints),
            },
        )

    async def record_webhook_attempts(
        self,
        *,
        outcomes: Sequence[Mapping[str, Json]],
        horizon: timedelta | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """The dispatcher's: record attempts' outcomes (horizon None: the SQL default,
        3 days); how many were the current claims of their deliveries."""
        return int(
            (
                await self._one(
                    q.RECORD_WEBHOOK_ATTEMPTS,
                    conn,
                    {"outcomes": _json(list(outcomes), "outcomes"), "horizon": horizon},
                )
            )[0]
        )

    async def prune_events(
        self,
        *,
        older_than: timedelta | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Delete up to max_rows events older than the window (None: the SQL
        defaults, 30 days and 1000) that no active webhook endpoint still needs;
        how many."""
        return int(
            (
                await self._one(
                    q.PRUNE_EVENTS, conn, {"older_than": older_than, "max_rows": max_rows}
                )
            )[0]
        )

    async def prune_webhook_deliveries(
        self,
        *,
        older_than: timedelta | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> int:
        """Delete up to max_rows deliveries delivered or failed before the window,
        with their attempts; how many."""
        return int(
            (
                await self._one(
                    q.PRUNE_WEBHOOK_DELIVERIES,
                    conn,
                    {"older_than": older_than, "max_rows": max_rows},
                )
            )[0]
        )

    # -- operators (ledger_operator): corrections of any app's rows -------------

    async def operator_grant_credits(
        self,
        *,
        operator: str,
        reason: str,
        owner_id: str,
        app: str,
        operation: str,
        idempotency_key: str,
        amount: int | None = None,
        expires_at: datetime | None = None,
        priority: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Entry:
        """grant_credits as app for owner_id, by a person: operator and reason
        are recorded with the entry (reason required)."""
        result: Entry = await self._one(
            q.OPERATOR_GRANT_CREDITS,
            conn,
            {
                "operator": operator,
                "reason": reason,
                "owner_id": owner_id,
                "app": app,
                "operation": operation,
                "idempotency_key": idempotency_key,
                "amount": amount,
                "expires_at": expires_at,
                "priority": priority,
            },
        )
        return result

    async def operator_void_grant(
        self,
        *,
        operator: str,
        reason: str,
        grant_id: int,
        idempotency_key: str,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Entry:
        """Void what remains of any app's grant, by a person (reason required)."""
        result: Entry = await self._one(
            q.OPERATOR_VOID_GRANT,
            conn,
            {
                "operator": operator,
                "reason": reason,
                "grant_id": grant_id,
                "idempotency_key": idempotency_key,
                "owner_id": owner_id,
            },
        )
        return result

    async def operator_reverse_entry(
        self,
        *,
        operator: str,
        reason: str,
        entry_id: int,
        idempotency_key: str,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[Entry]:
        """Reverse any app's entry, by a person (reason required); both legs
        of a transfer, the sending leg first."""
        return await self._rows(
            q.OPERATOR_REVERSE_ENTRY,
            conn,
            {
                "operator": operator,
                "reason": reason,
                "entry_id": entry_id,
                "idempotency_key": idempotency_key,
                "owner_id": owner_id,
            },
        )

    async def operator_release_hold(
        self,
        *,
        operator: str,
        reason: str,
        hold_id: int,
        idempotency_key: str,
        owner_id: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Hold:
        """Release any app's active hold, by a person (reason required)."""
        result: Hold = await self._one(
            q.OPERATOR_RELEASE_HOLD,
            conn,
            {
                "operator": operator,
                "reason": reason,
                "hold_id": hold_id,
                "idempotency_key": idempotency_key,
                "owner_id": owner_id,
            },
        )
        return result

    async def record_verify(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> VerifyRun:
        """Run verify() and record the run (what the console's overview shows)."""
        result: VerifyRun = await self._one(q.RECORD_VERIFY, conn, {})
        return result

    # -- the console's reads (ledger_reader, ledger_owner, ledger_operator) ----

    async def list_operator_actions(
        self,
        *,
        owner_id: str,
        entry_id: int | None = None,
        hold_id: int | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[OperatorAction]:
        """What operators did to an owner's rows, newest first (entry_id,
        hold_id: only those)."""
        return await self._rows(
            q.LIST_OPERATOR_ACTIONS,
            conn,
            {"owner_id": owner_id, "entry_id": entry_id, "hold_id": hold_id, "max_rows": max_rows},
        )

    async def owner_history(
        self,
        *,
        owner_id: str,
        before_seq: int | None = None,
        max_rows: int | None = None,
        app: str | None = None,
        operation: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[HistoryEntry]:
        """An owner's entries newest first by seq; the last row's seq as
        before_seq gives the next page; app and operation filter."""
        return await self._rows(
            q.OWNER_HISTORY,
            conn,
            {
                "owner_id": owner_id,
                "before_seq": before_seq,
                "max_rows": max_rows,
                "app": app,
                "operation": operation,
            },
        )

    async def find_owners(
        self,
        *,
        owner_id: str,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[BusyOwner]:
        """The owners whose id is owner_id or follows it in id order."""
        return await self._rows(q.FIND_OWNERS, conn, {"owner_id": owner_id, "max_rows": max_rows})

    async def balance_series(
        self,
        *,
        owner_id: str,
        points: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[BalancePoint]:
        """The owner's balance at evenly spaced instants from its first entry to now."""
        return await self._rows(
            q.BALANCE_SERIES, conn, {"owner_id": owner_id, "points": points}
        )

    async def daily_activity(
        self, *, days: int | None = None, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[DailyActivity]:
        """Per UTC day and app: credits issued, spent, expired and held."""
        return await self._rows(q.DAILY_ACTIVITY, conn, {"days": days})

    async def busiest_owners(
        self,
        *,
        since: timedelta | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[BusyOwner]:
        """The owners with the most entries since `since` ago, most first."""
        return await self._rows(
            q.BUSIEST_OWNERS, conn, {"since": since, "max_rows": max_rows}
        )

    async def list_open_holds(
        self,
        *,
        expiring_within: timedelta | None = None,
        stale_after: timedelta | None = None,
        max_rows: int | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[OpenHold]:
        """Holds neither captured nor released, soonest expiry first, with their state."""
        return await self._rows(
            q.LIST_OPEN_HOLDS,
            conn,
            {"expiring_within": expiring_within, "stale_after": stale_after, "max_rows": max_rows},
        )

    async def latest_verify(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> VerifyRun | None:
        """The last recorded verify() run, or None."""
        rows: list[VerifyRun] = await self._rows(q.LATEST_VERIFY, conn, {})
        return rows[0] if rows else None

    # -- console users (ledger_owner) and sign-ins (ledger_console) -------------

    async def set_console_user(
        self,
        *,
        name: str,
        role: str,
        password_hash: str,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> ConsoleUser:
        """Add a console user or replace its role and password hash."""
        result: ConsoleUser = await self._one(
            q.SET_CONSOLE_USER, conn, {"name": name, "role": role, "password_hash": password_hash}
        )
        return result

    async def remove_console_user(
        self, *, name: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """Remove a console user; whether it existed."""
        return bool((await self._one(q.REMOVE_CONSOLE_USER, conn, {"name": name}))[0])

    async def list_console_users(
        self, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> list[ConsoleUser]:
        """The console's users by name (no password hashes)."""
        return await self._rows(q.LIST_CONSOLE_USERS, conn, {})

    async def console_sign_in(
        self, *, name: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> SignInAttempt | None:
        """Start a sign-in attempt: None for an unknown name; else the hash to
        check (None while the user must wait: wait_seconds)."""
        rows: list[SignInAttempt] = await self._rows(q.CONSOLE_SIGN_IN, conn, {"name": name})
        return rows[0] if rows else None

    async def console_signed_in(
        self, *, name: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> bool:
        """Record a successful sign-in (the failure count starts again)."""
        return bool((await self._one(q.CONSOLE_SIGNED_IN, conn, {"name": name}))[0])

    async def console_user(
        self, *, name: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> ConsoleUser | None:
        """One console user, or None."""
        rows: list[ConsoleUser] = await self._rows(q.CONSOLE_USER, conn, {"name": name})
        return rows[0] if rows else None

    async def console_secret(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> str:
        """The key of the console's session cookies."""
        return str((await self._one(q.CONSOLE_SECRET, conn, {}))[0])
