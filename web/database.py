"""Connections for the web layer's own tables (API keys, the example app's
content), taken from the Ledger's pool: one pool per process serves both.

Ledger work never goes through here: it calls ``ledger_py`` methods (with
``conn=`` when an app's rows and a ledger call must share one transaction).
Errors still cross ``ledger_py``'s one boundary (``translate_errors``), so a
ledger SQLSTATE raised by an API-key function or an unreachable database
surfaces as the same ``LedgerError`` classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from ledger_py.client import Ledger
from ledger_py.errors import Where, translate_errors


@contextmanager
def connection(
    ledger: Ledger, timeout: float | None = None, transaction: bool = True, **params: Any
) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection inside one transaction (committed when the block
    ends normally, rolled back on an exception); with transaction=False, the
    pool's autocommit connection as it is (one round trip per statement, for
    a single read).

    ``params`` name the values sent, so that a NUL character in one of them
    is reported as that field's InvalidArgument. ``timeout``: seconds to
    wait for a pool connection (default: the pool's own). A pooled
    connection the server ended while idle is replaced first (Ledger.connection).
    """
    pool = ledger.pool
    where = Where.from_conninfo(pool.conninfo) if isinstance(pool.conninfo, str) else None
    with translate_errors(where, params), ledger.connection(timeout=timeout) as conn:
        if not transaction:
            yield conn
            return
        with conn.transaction():
            yield conn
