"""Database URLs and conninfo strings: reading them, rewriting them, never showing a password.

Every part of the project that takes a PostgreSQL URL (the wrapper's pools,
migrate(), the error boundary naming the server, the `ledger` command)
reads, rewrites and masks it here, with libpq's own parser
(`psycopg.conninfo`), so that a URL and a ``key=value`` conninfo string
mean the same thing everywhere and a password is masked the same way in
every message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "MASK",
    "Target",
    "hide_password",
    "libpq_url",
    "mask_url",
    "redact",
    "target",
    "with_timeouts",
    "yoyo_url",
]

# What a password is replaced with in anything shown to a person.
MASK = "***"


def libpq_url(url: str) -> str:
    """A URL psycopg.connect() accepts: a SQLAlchemy/yoyo style
    ``postgresql+driver://`` scheme becomes ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return f"postgresql://{rest}"
    return url


def yoyo_url(url: str) -> str:
    """The reverse, for yoyo: its psycopg 3 backend is selected by the
    ``postgresql+psycopg`` scheme."""
    scheme, rest = url.split("://", 1) if "://" in url else ("postgresql", url)
    if scheme in ("postgres", "postgresql", "psql"):
        scheme = "postgresql+psycopg"
    return f"{scheme}://{rest}"


@dataclass(frozen=True)
class Target:
    """The server a conninfo names. None: not given (libpq's default applies:
    a local socket or localhost, port 5432)."""

    host: str | None
    port: str | None
    password: str | None


@functools.lru_cache(maxsize=64)
def target(conninfo: str) -> Target | None:
    """Host, port and password of a URL or conninfo string; None if libpq
    cannot parse it. Cached: the error boundary asks once per failed call
    (libpq's parser costs about 50 us) and a pool's conninfo never changes."""
    try:
        params = conninfo_to_dict(libpq_url(conninfo))
    except psycopg.Error:
        return None
    host = params.get("host") or params.get("hostaddr")
    port = params.get("port")
    password = params.get("password")
    return Target(
        str(host) if host else None,
        str(port) if port else None,
        str(password) if password else None,
    )


def mask_url(conninfo: str) -> str:
    """A URL (or conninfo string) safe to print: its password replaced by ***."""
    if "://" not in conninfo:
        found = target(conninfo)
        if found is None:
            return "<unparsable database URL>"
        return make_conninfo(conninfo, password=MASK) if found.password else conninfo
    try:
        parts = urlsplit(conninfo)
        password = parts.password
    except ValueError:
        return "<unparsable database URL>"
    if password is None:
        return conninfo
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


def hide_password(text: str, password: str | None) -> str:
    """text with every occurrence of password replaced by ***."""
    return text.replace(password, MASK) if password else text


def redact(text: str, conninfo: str | None) -> str:
    """text with conninfo (and its password, wherever else it appears) masked."""
    if not conninfo:
        return text
    found = target(conninfo)
    text = text.replace(conninfo, mask_url(conninfo))
    return hide_password(text, found.password if found else None)


def with_timeouts(
    conninfo: str, lock_timeout: float | None, statement_timeout: float | None
) -> str:
    """conninfo whose `options` also set lock_timeout and statement_timeout
    (after any options the URL has, so these win; None leaves the server's,
    the role's or the URL's setting alone). Seconds, rounded up to 1 ms:
    PostgreSQL reads 0 as no limit, so a timeout must be positive."""
    timeouts = {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout}
    settings = []
    for name, seconds in timeouts.items():
        if seconds is None:
            continue
        if not seconds > 0:
            raise ValueError(f"{name} must be a positive number of seconds or None")
        settings.append(f"-c {name}={max(1, round(seconds * 1000))}")  # 0 would mean none
    if not settings:
        return conninfo
    current = conninfo_to_dict(conninfo).get("options")
    if current:
        settings.insert(0, str(current))
    return make_conninfo(conninfo, options=" ".join(settings))
