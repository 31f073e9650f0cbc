"""API key tokens: how one is made, and the hash that is all the database keeps.

A token is ``lgk_`` followed by 32 random bytes (``secrets.token_urlsafe``,
43 characters). The database stores SHA-256(token) and never sees the token
itself: with 256 bits of randomness no dictionary or brute-force search can
invert the hash, so a slow password hash (bcrypt, argon2) would buy nothing
but milliseconds on every request, while a plain digest is found through a
unique index in one lookup. The token is shown once, when the key is made
(`create_api_key` here, for `ledger keys create` and the tests); a
request's token is hashed here and looked up with `Ledger.api_key_lookup`.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

from .results import NewApiKey

if TYPE_CHECKING:
    from .client import Ledger

__all__ = ["TOKEN_PREFIX", "create_api_key", "lookup_digest", "new_token", "token_hash"]

TOKEN_PREFIX = "lgk_"

# No token this module makes is longer: a longer one is not worth hashing.
_LONGEST = 200


def new_token() -> str:
    """A new random token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """The 32-byte digest stored for a token (the `token_sha256` of the SQL functions)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def lookup_digest(token: str | None) -> bytes | None:
    """The digest to look a presented token up by, or None when it cannot be
    one of ours (missing, another prefix, too long): no round trip for those."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > _LONGEST:
        return None
    return token_hash(token)


def create_api_key(
    ledger: Ledger, *, app: str, label: str | None = None, scope: str | None = None
) -> NewApiKey:
    """A new key of a registered app and its token: the token is made here,
    only its hash is sent (Ledger.create_api_key), and this result is the one
    place it exists. scope None: the SQL default ("app")."""
    token = new_token()
    key = ledger.create_api_key(app=app, token_sha256=token_hash(token), label=label, scope=scope)
    return NewApiKey(key, token)
