"""Which app a request's API key speaks for: the HTTP side of the API keys.

Keys are made, listed and revoked through ``ledger_py`` (``Ledger.create_api_key``
and its neighbours, the SQL in ``sql/70_api_keys.sql``); the token format and
its hash are ``ledger_py.tokens``'. Here a presented token is resolved to its
``KeyHolder`` on each request, optionally through a short per-process cache.
"""

from __future__ import annotations

import threading
import time

from ledger_py import tokens
from ledger_py.client import Ledger
from ledger_py.results import KeyHolder

__all__ = ["KeyHolder", "KeyResolver"]


class KeyResolver:
    """Token -> KeyHolder, with an optional short per-process cache.

    ``cache_seconds`` = 0 (the default) asks the database on every request,
    so a revocation takes effect at once; a few seconds of cache saves one
    round trip per request at the price of that delay.
    """

    def __init__(self, ledger: Ledger, cache_seconds: float = 0.0) -> None:
        self._ledger = ledger
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, KeyHolder]] = {}
        self._lock = threading.Lock()

    def holder_for(self, token: str | None) -> KeyHolder | None:
        digest = tokens.lookup_digest(token)
        if digest is None:
            return None
        now = time.monotonic()
        if self._cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        # One statement on an autocommit pool connection: one round trip.
        holder = self._ledger.api_key_lookup(token_sha256=digest)
        if holder is not None and self._cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + self._cache_seconds, holder)
        return holder
