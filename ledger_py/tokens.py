"""API key tokens: how one is made, and the hash that is all the database keeps.

A token is ``lgk_`` followed by 32 random bytes (``secrets.token_urlsafe``,
43 characters). The database stores SHA-256(token) and never sees the token
itself: with 256 bits of randomness no dictionary or brute-force search can
invert the hash, so a slow password hash (bcrypt, argon2) would buy nothing
but milliseconds on every request, while a plain digest is found through a
unique index in one lookup. The token is shown once, when the key is made
(`Ledger.create_api_key`); a request's token is hashed here and looked up
with `Ledger.api_key_lookup`.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["TOKEN_PREFIX", "lookup_digest", "new_token", "token_hash"]

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
