"""The HTTP API of the shared credit ledger (Flask, via apiflask).

``create_app(config)`` builds it; ``web.wsgi:app`` is what gunicorn serves
(with ``web/gunicorn_conf.py``); ``web.api_keys`` manages the apps' API keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from web.app import close_app, create_app

__all__ = ["close_app", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: gunicorn's master imports
    # web.gunicorn_conf and web.gunicorn_worker, and psycopg (which web.app
    # imports) must first be imported in a worker, after gevent patched it.
    if name in __all__:
        from web import app

        return getattr(app, name)
    raise AttributeError(f"module 'web' has no attribute {name!r}")
