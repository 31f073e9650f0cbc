"""API keys of the HTTP API: one or more per app, stored only as hashes.

A token is ``lgk_`` followed by 32 random bytes (``secrets.token_urlsafe``).
The database stores SHA-256(token) and never sees the token itself: with
256 bits of randomness no dictionary or brute-force search can invert the
hash, so a slow password hash (bcrypt, argon2) would buy nothing but
milliseconds on every request, while a plain digest can be looked up through
a unique index. The token is shown once, when the key is created.

The SQL lives in ``sql/70_api_keys.sql`` (table: ``migrations/0006_api_keys.sql``).
``ledger keys create|list|revoke`` calls the three public functions here.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger_py.client import Ledger
from web.database import connection

TOKEN_PREFIX = "lgk_"


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: never its token nor its hash."""

    key_id: str
    app: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None
    scope: str = "app"  # "app", or "audit": reads everything, writes nothing

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_api_key(
    ledger: Ledger, app: str, label: str | None = None, scope: str = "app"
) -> tuple[str, str]:
    """A new key for a registered app: (key_id, token). Raises UnknownApp, or
    InvalidArgument for a scope other than "app" and "audit"."""
    key_id = "key_" + secrets.token_hex(8)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with connection(ledger, app=app) as conn:
        conn.execute(
            "SELECT ledger.create_api_key("
            "app => %s, key_id => %s, token_sha256 => %s, label => %s, scope => %s)",
            (app, key_id, token_hash(token), label, scope),
        )
    return key_id, token


def list_api_keys(ledger: Ledger) -> list[ApiKey]:
    """Every key, active and revoked, oldest first."""
    with connection(ledger) as conn:
        rows = conn.execute(
            "SELECT key_id, app, label, created_at, revoked_at, scope FROM ledger.list_api_keys()"
        ).fetchall()
    return [ApiKey(*row) for row in rows]


def revoke_api_key(ledger: Ledger, key_id: str) -> bool:
    """True when the key was active and is now revoked; False if unknown or revoked before."""
    with connection(ledger, key_id=key_id) as conn:
        row = conn.execute("SELECT ledger.revoke_api_key(key_id => %s)", (key_id,)).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class KeyHolder:
    """Who a request's key speaks for: its app, and its scope."""

    app: str
    scope: str

    @property
    def reads_as(self) -> str | None:
        """The app to pass to the read functions: None (everything) for an audit key."""
        return None if self.scope == "audit" else self.app


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
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = token_hash(token)
        now = time.monotonic()
        if self._cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        # One statement, so no transaction around it: one round trip.
        with connection(self._ledger, transaction=False) as conn:
            row: Any = conn.execute(
                "SELECT app, scope FROM ledger.api_key_lookup(%s)", (digest,)
            ).fetchone()
        holder = KeyHolder(row[0], row[1]) if row else None
        if holder is not None and self._cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + self._cache_seconds, holder)
        return holder

    def app_for(self, token: str | None) -> str | None:
        holder = self.holder_for(token)
        return None if holder is None else holder.app
