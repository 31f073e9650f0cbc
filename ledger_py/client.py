"""`Ledger` and `AsyncLedger`: one method per SQL function of the ledger.

Each method sends exactly one statement, `SELECT ... FROM ledger.<fn>(...)`
with bound named parameters, and returns frozen dataclasses. Without
`conn=`, the statement runs on a pool connection in autocommit mode: the
function is atomic by itself, so the call is one round trip (an explicit
transaction per call would add BEGIN and COMMIT). With `conn=`, it runs on
the caller's connection and joins whatever transaction is open there; the
wrapper never commits or rolls back a caller's connection.

Every error crosses `errors.translate_errors`, the one boundary. No business
rule lives here: amounts, owners, metadata and limits are the database's to
judge.

Every wait is bounded. The pool's connections start with PostgreSQL's
lock_timeout and statement_timeout set as connection options (sent once in
the startup packet, no statement per call): a call that waits longer for a
lock another transaction holds raises LockTimeout, one that runs too long
StatementTimeout (both LedgerBusy). A pooled connection the server ended
while it sat idle (a restart) is noticed at checkout by a zero-timeout poll
of its socket (an idle healthy connection has nothing to read) and replaced
before any statement is sent on it.
"""

from __future__ import annotations

import json
import select
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import queries as q
from . import tokens
from .conninfo import libpq_url, with_timeouts
from .errors import InvalidArgument, LedgerUnavailable, Where, translate_errors
from .results import (
    ApiKey,
    App,
    Balance,
    Discrepancy,
    Entry,
    Hold,
    HoldRecord,
    JournalEntry,
    KeyHolder,
    NewApiKey,
    Operation,
    ReportRow,
    Transfer,
)

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_PREPARE_THRESHOLD",
    "DEFAULT_STATEMENT_TIMEOUT",
    "AsyncLedger",
    "Ledger",
]

T = TypeVar("T")

# psycopg's own default: a statement is prepared on a connection after it
# ran that many times there. Right for direct connections; pass None for
# PgBouncer in transaction mode (before 1.21, or without
# max_prepared_statements), where a prepared statement may vanish between calls.
DEFAULT_PREPARE_THRESHOLD = 5

# Seconds a statement of a pool connection waits for a lock before LockTimeout
# (a debit of an owner whose row another transaction holds), and runs at most
# before StatementTimeout. Generous for the second: verify() reads the whole journal.
DEFAULT_LOCK_TIMEOUT = 5.0
DEFAULT_STATEMENT_TIMEOUT = 60.0

Json = Any  # a JSON-serializable value; the database decides what it accepts


def _json(value: Json, field: str = "metadata") -> str | None:
    """Metadata travels as JSON text, so the database judges every value
    (\\u0000, non-objects) and answers LG007 itself. A value json cannot
    write at all (a set, an object) is InvalidArgument before any round trip."""
    if value is None:
        return None
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"invalid argument: {field} is not JSON-serializable ({exc})",
            detail={"field": field, "reason": "wrong type", "expected": "JSON values"},
        ) from exc


def _has_input(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection has something to read (or is closed).

    A healthy idle connection never has: the server speaks only when asked.
    One the server ended (a restart, an administrator's kill) has its
    goodbye error or end-of-file waiting. A zero-timeout poll costs a system
    call and no round trip."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _broken_connection(exc: BaseException | None) -> bool:
    """Whether an error means the server went away (so idle pool connections
    are likely dead too), as opposed to a statement-level failure."""
    cause = exc.__cause__ if exc is not None else None
    if not isinstance(cause, psycopg.OperationalError):
        return False
    if type(cause).__module__.startswith("psycopg_pool"):
        return False  # pool timeout/closed: nothing to throw away
    state = cause.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _pool_kwargs(prepare_threshold: int | None) -> dict[str, Any]:
    return {"autocommit": True, "prepare_threshold": prepare_threshold}


def _where_of_pool(pool: ConnectionPool[Any] | AsyncConnectionPool[Any]) -> Where:
    return (
        Where.from_conninfo(pool.conninfo) if isinstance(pool.conninfo, str) else Where(None, None)
    )


def _check_construction(url: str | None, pool: object) -> None:
    if (url is None) == (pool is None):
        raise TypeError("give either a database URL or pool=, not both and not neither")


class Ledger:
    """The ledger for synchronous code (threads welcome: the pool is shared).

    Ledger(url, min_size=1, max_size=10, prepare_threshold=5, timeout=10.0)
        builds and owns a psycopg_pool.ConnectionPool (autocommit
        connections); close() or the `with` block closes it.
    Ledger(pool=existing_pool)
        uses an application's pool as it is configured; close() leaves it open.

    `timeout` is how long a call waits for a pool connection before raising
    LedgerUnavailable. `lock_timeout` (default 5 s) and `statement_timeout`
    (default 60 s) bound every statement of the pool's connections (seconds;
    None leaves the server's setting): LockTimeout / StatementTimeout, both
    LedgerBusy, when one runs out. With pool= or conn=, the connection's own
    settings apply. `open=False` defers opening (e.g. until after a fork);
    call open() then.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        min_size: int = 1,
        max_size: int = 10,
        prepare_threshold: int | None = DEFAULT_PREPARE_THRESHOLD,
        timeout: float = 10.0,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        open: bool = True,
        name: str = "ledger",
    ) -> None:
        _check_construction(url, pool)
        if pool is None:
            assert url is not None
            conninfo = with_timeouts(libpq_url(url), lock_timeout, statement_timeout)
            pool = ConnectionPool(
                conninfo,
                min_size=min_size,
                max_size=max_size,
                kwargs=_pool_kwargs(prepare_threshold),
                timeout=timeout,
                open=False,
                name=name,
            )
            self._owns_pool = True
        else:
            self._owns_pool = False
        self._pool: ConnectionPool[Any] = pool
        self._where = _where_of_pool(pool)
        if open and self._owns_pool:
            self.open()

    @property
    def pool(self) -> ConnectionPool[Any]:
        """The connection pool (e.g. to run an app's own statements beside the ledger's)."""
        return self._pool

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool; with wait=True, block until it has min_size connections
        (LedgerUnavailable when the database cannot be reached in time)."""
        with translate_errors(self._where):
            self._pool.open(wait=wait, timeout=timeout)

    def close(self) -> None:
        """Close the pool if this Ledger built it."""
        if self._owns_pool:
            self._pool.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the one way a statement is run ------------------------------------

    def _rows(
        self, call: q.Call, conn: psycopg.Connection[Any] | None, given: Mapping[str, Any]
    ) -> list[Any]:
        params = call.params(given)
        query = call.sql(params)
        if conn is not None:
            with translate_errors(lambda: Where.from_connection(conn), params):
                with conn.cursor(row_factory=call.row_factory) as cur:
                    cur.execute(query, params)
                    return cur.fetchall()
        try:
            with translate_errors(self._where, params):
                # Ledger.connection() inlined (a generator-based context
                # manager would cost the hot path more than the check itself).
                last = self._pool.max_size
                for attempt in range(last + 1):
                    with self._pool.connection() as pooled:
                        if attempt < last and _has_input(pooled) and self._discard_if_dead(pooled):
                            continue
                        with pooled.cursor(row_factory=call.row_factory) as cur:
                            cur.execute(query, params)
                            rows: list[Any] = cur.fetchall()
                            return rows
                raise AssertionError("unreachable: the last attempt is not checked")
        except LedgerUnavailable as exc:
            # The server went away: every idle connection is probably dead.
            # drain() replaces them without a round trip, so the first call
            # after the server is back gets a fresh connection.
            if self._owns_pool and _broken_connection(exc) and not self._pool.closed:
                self._pool.drain()
            raise

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pool connection that is alive as far as can be known without a
        round trip (psycopg errors pass untranslated: wrap the block in
        errors.translate_errors). `timeout`: the pool's by default.

        A connection with input waiting while idle is checked with an empty
        statement; one that fails it is closed (the pool replaces it) and,
        since the server likely ended every idle one, the pool is drained.
        Nothing the caller sends has been sent yet, so trying the next
        connection is safe for any call."""
        last = self._pool.max_size
        for attempt in range(last + 1):
            with self._pool.connection(timeout=timeout) as conn:
                if attempt < last and _has_input(conn) and self._discard_if_dead(conn):
                    continue
                yield conn
                return

    def _discard_if_dead(self, conn: psycopg.Connection[Any]) -> bool:
        """Check a connection that had input waiting with an empty statement;
        if it fails, close it (the pool replaces it when it comes back) and
        drain the pool (its other idle connections likely died too)."""
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error:
            conn.close()
            if self._owns_pool and not self._pool.closed:
                self._pool.drain()
            return True
        return False

    def _one(
        self, call: q.Call, conn: psycopg.Connection[Any] | None, given: Mapping[str, Any]
    ) -> Any:
        rows = self._rows(call, conn, given)
        return rows[0]

    # -- apps and operations (ledger_owner) ---------------------------------

    def define_app(
        self,
        *,
        app: str,
        description: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> App:
        """Register an app (idempotent; a description given replaces the stored one)."""
        result: App = self._one(q.DEFINE_APP, conn, {"app": app, "description": description})
        return result

    def define_operation(
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
        conn: psycopg.Connection[Any] | None = None,
    ) -> Operation:
        """Register or update an operation of an app (None: the SQL default)."""
        result: Operation = self._one(
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
            },
        )
        return result

    def list_operations(
        self, *, app: str, conn: psycopg.Connection[Any] | None = None
    ) -> list[Operation]:
        """The operations the app may post (core's and its own), by name."""
        return self._rows(q.LIST_OPERATIONS, conn, {"app": app})

    # -- entries -------------------------------------------------------------

    def post_entry(
        self,
        *,
        owner_id: str,
        app: str,
        operation: str,
        idempotency_key: str,
        amount: int | None = None,
        metadata: Json = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> Entry:
        """Write one entry (amount None: the operation's default); a replay of
        an earlier identical request returns it with replayed=True."""
        result: Entry = self._one(
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

    def post_entries(
        self,
        *,
        entries: Sequence[Mapping[str, Json]],
        idempotency_key: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[Entry]:
        """Write a batch (objects keyed like post_entry's parameters) all or
        nothing; results in input order. idempotency_key is the key of the
        request as a whole: items without their own key get '<key>:<index>',
        and the same key with another batch is IdempotencyConflict."""
        return self._rows(
            q.POST_ENTRIES,
            conn,
            {"entries": _json(list(entries), "entries"), "idempotency_key": idempotency_key},
        )

    def get_balance(self, *, owner_id: str, conn: psycopg.Connection[Any] | None = None) -> Balance:
        """Balance, held and available credits of an owner (zeros if unknown)."""
        result: Balance = self._one(q.GET_BALANCE, conn, {"owner_id": owner_id})
        return result

    def get_entry(
        self, *, entry_id: int, app: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> JournalEntry:
        """One journal entry (NotFound if none); with app, another app's
        metadata and idempotency_key read None."""
        result: JournalEntry = self._one(q.GET_ENTRY, conn, {"entry_id": entry_id, "app": app})
        return result

    def list_entries(
        self,
        *,
        owner_id: str,
        after_id: int | None = None,
        max_rows: int | None = None,
        app: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[JournalEntry]:
        """An owner's history, newest first; the last entry_id as after_id gives the next page.
        With app, other apps' metadata and idempotency_key read None."""
        return self._rows(
            q.LIST_ENTRIES,
            conn,
            {"owner_id": owner_id, "after_id": after_id, "max_rows": max_rows, "app": app},
        )

    def balance_at(
        self, *, owner_id: str, at: datetime, conn: psycopg.Connection[Any] | None = None
    ) -> int:
        """The owner's balance as of an instant."""
        return int(self._one(q.BALANCE_AT, conn, {"owner_id": owner_id, "at": at})[0])

    # -- holds ---------------------------------------------------------------

    def create_hold(
        self,
        *,
        owner_id: str,
        app: str,
        operation: str,
        idempotency_key: str,
        amount: int | None = None,
        ttl: timedelta | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> Hold:
        """Reserve what a debit of the operation would take (ttl None: the SQL default)."""
        result: Hold = self._one(
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

    def capture_hold(
        self,
        *,
        hold_id: int,
        app: str,
        amount: int | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> Entry:
        """Turn an active hold into one debit entry (amount None: all of it)."""
        result: Entry = self._one(
            q.CAPTURE_HOLD, conn, {"hold_id": hold_id, "app": app, "amount": amount}
        )
        return result

    def release_hold(
        self, *, hold_id: int, app: str, conn: psycopg.Connection[Any] | None = None
    ) -> Hold:
        """Free an active hold (a repeated release is a replay)."""
        result: Hold = self._one(q.RELEASE_HOLD, conn, {"hold_id": hold_id, "app": app})
        return result

    def get_hold(
        self, *, hold_id: int, app: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> HoldRecord:
        """One hold (NotFound if none); with app, another app's idempotency_key reads None."""
        result: HoldRecord = self._one(q.GET_HOLD, conn, {"hold_id": hold_id, "app": app})
        return result

    def list_holds(
        self, *, owner_id: str, app: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> list[HoldRecord]:
        """An owner's holds, newest first; with app, other apps' idempotency_key reads None."""
        return self._rows(q.LIST_HOLDS, conn, {"owner_id": owner_id, "app": app})

    # -- cross-owner work ------------------------------------------------------

    def transfer(
        self,
        *,
        from_owner: str,
        to_owner: str,
        amount: int,
        app: str,
        idempotency_key: str,
        metadata: Json = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> Transfer:
        """Move credits between two owners in one transaction."""
        result: Transfer = self._one(
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

    def reverse_entry(
        self,
        *,
        entry_id: int,
        app: str,
        idempotency_key: str,
        reason: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[Entry]:
        """Compensate an entry the app wrote (both legs of a transfer)."""
        return self._rows(
            q.REVERSE_ENTRY,
            conn,
            {
                "entry_id": entry_id,
                "app": app,
                "idempotency_key": idempotency_key,
                "reason": reason,
            },
        )

    # -- reports ---------------------------------------------------------------

    def app_report(
        self,
        *,
        app: str,
        from_time: datetime,
        to_time: datetime,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[ReportRow]:
        """Per operation of the app's entries in [from_time, to_time)."""
        return self._rows(
            q.APP_REPORT, conn, {"app": app, "from_time": from_time, "to_time": to_time}
        )

    def verify(self, *, conn: psycopg.Connection[Any] | None = None) -> list[Discrepancy]:
        """Consistency findings; an empty list means healthy."""
        return self._rows(q.VERIFY, conn, {})

    # -- HTTP API keys (ledger_owner; api_key_lookup: ledger_app) --------------

    def create_api_key(
        self,
        *,
        app: str,
        label: str | None = None,
        scope: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> NewApiKey:
        """A new key of a registered app (scope None: the SQL default, "app")
        and its token, which exists only in the result: the database keeps its hash."""
        token = tokens.new_token()
        key: ApiKey = self._one(
            q.CREATE_API_KEY,
            conn,
            {"app": app, "token_sha256": tokens.token_hash(token), "label": label, "scope": scope},
        )
        return NewApiKey(key, token)

    def list_api_keys(self, *, conn: psycopg.Connection[Any] | None = None) -> list[ApiKey]:
        """Every key, active and revoked, oldest first."""
        return self._rows(q.LIST_API_KEYS, conn, {})

    def revoke_api_key(self, *, key_id: str, conn: psycopg.Connection[Any] | None = None) -> bool:
        """True when the key was active and is revoked now; False if unknown or revoked before."""
        return bool(self._one(q.REVOKE_API_KEY, conn, {"key_id": key_id})[0])

    def api_key_lookup(
        self, *, token_sha256: bytes, conn: psycopg.Connection[Any] | None = None
    ) -> KeyHolder | None:
        """The app and scope of the active key with this token hash
        (tokens.token_hash), or None (unknown or revoked)."""
        rows: list[KeyHolder] = self._rows(q.API_KEY_LOOKUP, conn, {"token_sha256": token_sha256})
        return rows[0] if rows else None


class AsyncLedger:
    """The ledger for asyncio code: the same methods as Ledger, awaited.

    AsyncLedger(url, ...) builds a psycopg_pool.AsyncConnectionPool; it opens
    on `async with`, on `await open()`, or at the first call. close() (or
    leaving the `async with` block) closes a pool this object built.
    AsyncLedger(pool=existing_pool) uses the application's pool as it is.
    lock_timeout and statement_timeout: as for Ledger.
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
                open=False,
                name=name,
            )
            self._owns_pool = True
        else:
            self._owns_pool = False
        self._pool: AsyncConnectionPool[Any] = pool
        self._where = _where_of_pool(pool)
        self._opened = not self._owns_pool

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """The connection pool (e.g. to run an app's own statements beside the ledger's)."""
        return self._pool

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool; with wait=True, until it has min_size connections."""
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
        try:
            with translate_errors(self._where, params):
                # AsyncLedger.connection() inlined, as in Ledger._rows.
                last = self._pool.max_size
                for attempt in range(last + 1):
                    async with self._pool.connection() as pooled:
                        if (
                            attempt < last
                            and _has_input(pooled)
                            and await self._discard_if_dead(pooled)
                        ):
                            continue
                        async with pooled.cursor(row_factory=call.row_factory) as cur:
                            await cur.execute(query, params)
                            rows: list[Any] = await cur.fetchall()
                            return rows
                raise AssertionError("unreachable: the last attempt is not checked")
        except LedgerUnavailable as exc:
            # See Ledger._connection: replace the likely dead idle connections.
            if self._owns_pool and _broken_connection(exc) and not self._pool.closed:
                await self._pool.drain()
            raise

    @asynccontextmanager
    async def connection(
        self, timeout: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pool connection alive as far as can be known without a round
        trip: see Ledger.connection."""
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
        """As Ledger._discard_if_dead."""
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
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Operation:
        """Register or update an operation of an app (None: the SQL default)."""
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
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> JournalEntry:
        """One journal entry (NotFound if none); with app, another app's
        metadata and idempotency_key read None."""
        result: JournalEntry = await self._one(
            q.GET_ENTRY, conn, {"entry_id": entry_id, "app": app}
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
        """An owner's history, newest first; the last entry_id as after_id gives the next page.
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
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> Entry:
        """Turn an active hold into one debit entry (amount None: all of it)."""
        result: Entry = await self._one(
            q.CAPTURE_HOLD, conn, {"hold_id": hold_id, "app": app, "amount": amount}
        )
        return result

    async def release_hold(
        self, *, hold_id: int, app: str, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> Hold:
        """Free an active hold (a repeated release is a replay)."""
        result: Hold = await self._one(q.RELEASE_HOLD, conn, {"hold_id": hold_id, "app": app})
        return result

    async def get_hold(
        self,
        *,
        hold_id: int,
        app: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> HoldRecord:
        """One hold (NotFound if none); with app, another app's idempotency_key reads None."""
        result: HoldRecord = await self._one(q.GET_HOLD, conn, {"hold_id": hold_id, "app": app})
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
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> list[Entry]:
        """Compensate an entry the app wrote (both legs of a transfer)."""
        return await self._rows(
            q.REVERSE_ENTRY,
            conn,
            {
                "entry_id": entry_id,
                "app": app,
                "idempotency_key": idempotency_key,
                "reason": reason,
            },
        )

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

    # -- HTTP API keys (ledger_owner; api_key_lookup: ledger_app) --------------

    async def create_api_key(
        self,
        *,
        app: str,
        label: str | None = None,
        scope: str | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> NewApiKey:
        """A new key of a registered app (scope None: the SQL default, "app")
        and its token, which exists only in the result: the database keeps its hash."""
        token = tokens.new_token()
        key: ApiKey = await self._one(
            q.CREATE_API_KEY,
            conn,
            {"app": app, "token_sha256": tokens.token_hash(token), "label": label, "scope": scope},
        )
        return NewApiKey(key, token)

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
