"""Bearer authentication: the API key decides the app a request acts for."""

from __future__ import annotations

from apiflask import HTTPTokenAuth
from flask import current_app, request

from ledger_py.results import KeyHolder
from web.api_keys import KeyResolver
from web.errors import api_error

auth = HTTPTokenAuth(
    scheme="Bearer",
    description="An API key of one app (`ledger keys create APP`): `Authorization: Bearer lgk_...`",
)

# What an audit key may send: it reads everything and writes nothing.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@auth.verify_token  # type: ignore[untyped-decorator]
def _verify_token(token: str) -> KeyHolder | None:
    resolver: KeyResolver = current_app.extensions["ledger_web"].keys
    holder = resolver.holder_for(token)
    if holder is not None and holder.scope == "audit" and request.method not in READ_METHODS:
        raise api_error(403, "forbidden", "an audit key reads and never writes")
    return holder


def _holder() -> KeyHolder:
    holder = auth.current_user
    assert isinstance(holder, KeyHolder)
    return holder


def current_app_name() -> str:
    """The app of the request's API key (only inside an auth_required view)."""
    return _holder().app


def reading_app() -> str | None:
    """The app to pass to the read functions: the key's app, which alone sees
    its entries' metadata and idempotency keys, or None for an audit key,
    which reads everything."""
    return _holder().reads_as
