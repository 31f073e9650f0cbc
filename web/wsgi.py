"""The WSGI entry point: ``gunicorn -c python:web.gunicorn_conf web.wsgi:app``.

Gunicorn imports this module in each worker after the fork (the config
module leaves ``preload_app`` off), so every worker builds its own app and
opens its own connection pool. Configuration comes from the environment
(LEDGER_DATABASE_URL, LEDGER_POOL_SIZE, ...).
"""

from web.app import create_app

app = create_app()
