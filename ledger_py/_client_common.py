"""What Ledger and AsyncLedger share: defaults, argument encoding, and the
checks of a pooled connection's health (the timeouts of a pool's connections
are set in its conninfo: ledger_py.conninfo.with_timeouts). Nothing here
waits on the network, so one copy serves both clients.
"""

from __future__ import annotations

import json
import select
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .errors import InvalidArgument, Where

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

# Seconds a pool slot keeps retrying a connection the database refused before
# it is given up. psycopg_pool doubles the wait between tries (1, 2, 4, 8 s...)
# until this runs out, so with its own default (300 s) a database back after a
# one-minute outage could wait up to a minute for the pool's next try. Kept
# short, the waits stay at 1, 2, 2 s; a slot given up is retried at once by
# the next call that needs a connection. So once the database is back, a call
# gets a connection within about 2 s.
DEFAULT_RECONNECT_TIMEOUT = 5.0

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
