"""Which app a request's API key speaks for: the HTTP side of the API keys.

Keys are made, listed and revoked through ``ledger_py`` (``Ledger.create_api_key``
and its neighbours, the SQL in ``sql/70_api_keys.sql``); the token format and
its hash are ``ledger_py.tokens``'. Here a presented token is resolved to its
``KeyHolder`` on each request, optionally through a short per-process cache.

The cache and revocation: an answer of the database is kept for at most
``cache_seconds`` from the moment its lookup was *sent* (a lookup that ran
before a revocation committed is never kept longer than that), and a hit
never extends it. So a revoked key is refused by every process at most
``cache_seconds`` after the revocation committed. Only active keys are
kept (an unknown or revoked token asks the database every time, so junk
tokens cannot fill the cache), at most ``MAX_CACHED`` of them.
"""

from __future__ import annotations

import time

from ledger_py import tokens
from ledger_py.client import Ledger
from ledger_py.results import KeyHolder

__all__ = ["MAX_CACHED", "SERVED_API_KEY_CACHE_SECONDS", "KeyHolder", "KeyResolver"]

MAX_CACHED = 10_000  # keys per process; past it the cache starts over
# The bound the served stack (web/gunicorn_conf.py) sets unless
# LEDGER_API_KEY_CACHE_SECONDS says otherwise.
SERVED_API_KEY_CACHE_SECONDS = "1"


class KeyResolver:
    """Token -> KeyHolder, with an optional short per-process cache.

    ``cache_seconds`` = 0 asks the database on every request, so a
    revocation takes effect at once; N seconds of cache saves that round
    trip (and its CPU on both sides) on nearly every request, at the price
    of a revocation taking up to N seconds.
    """

    def __init__(self, ledger: Ledger, cache_seconds: float = 0.0) -> None:
        if not cache_seconds >= 0:
            raise ValueError(f"the API key cache must be 0 or more seconds, got {cache_seconds}")
        self._ledger = ledger
        self.cache_seconds = cache_seconds
        # digest -> (monotonic deadline, holder). Reads and writes of one
        # dict item are atomic under the GIL: no lock on the hot path.
        self._cache: dict[bytes, tuple[float, KeyHolder]] = {}

    def holder_for(self, token: str | None) -> KeyHolder | None:
        digest = tokens.lookup_digest(token)
        if digest is None:
            return None
        if self.cache_seconds > 0:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        # Taken before the lookup is sent: the deadline bounds the age of the answer.
        asked = time.monotonic()
        # One statement on an autocommit pool connection: one round trip.
        holder = self._ledger.api_key_lookup(token_sha256=digest)
        if self.cache_seconds > 0:
            if holder is None:
                self._cache.pop(digest, None)
            else:
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
                self._cache[digest] = (asked + self.cache_seconds, holder)
        return holder
