"""The HTTP API of the shared credit ledger (Flask, via apiflask).

``create_app(config)`` builds it; ``web.wsgi:app`` is what gunicorn serves
(with ``web/gunicorn_conf.py``); ``web.api_keys`` resolves a request's API key.
"""

from web.app import close_app, create_app

__all__ = ["close_app", "create_app"]
