"""Bearer authentication: the API key decides the app a request acts for."""

from __future__ import annotations

from apiflask import HTTPTokenAuth
from flask import current_app

from web.api_keys import KeyResolver

auth = HTTPTokenAuth(
    scheme="Bearer",
    description="An API key of one app (`ledger keys create APP`): `Authorization: Bearer lgk_...`",
)


@auth.verify_token  # type: ignore[untyped-decorator]
def _verify_token(token: str) -> str | None:
    resolver: KeyResolver = current_app.extensions["ledger_web"].keys
    return resolver.app_for(token)


def current_app_name() -> str:
    """The app of the request's API key (only inside an auth_required view)."""
    app = auth.current_user
    assert isinstance(app, str)
    return app
