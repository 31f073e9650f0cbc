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

Opening is the same for both: the constructor does no I/O; the pool opens on
entering the `with` / `async with` block, on open(), or at the first call.

One source: `AsyncLedger` (ledger_py/_client_async.py) is written by hand and
`Ledger` (ledger_py/_client_sync.py) is generated from it by
tools/async_to_sync.py (`make generate`). Both are imported from here.
"""

from __future__ import annotations

from ._client_async import AsyncLedger
from ._client_common import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_PREPARE_THRESHOLD,
    DEFAULT_STATEMENT_TIMEOUT,
)
from ._client_sync import Ledger

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_PREPARE_THRESHOLD",
    "DEFAULT_STATEMENT_TIMEOUT",
    "AsyncLedger",
    "Ledger",
]
