"""Gunicorn settings for the ledger's HTTP API (``-c python:web.gunicorn_conf``).

Values come from the same environment variables as the ``ledger`` command;
options given on gunicorn's command line override them.
"""

from __future__ import annotations

import os
from typing import Any

bind = f"{os.environ.get('LEDGER_HOST', '127.0.0.1')}:{os.environ.get('LEDGER_PORT', '8000')}"
workers = int(os.environ.get("LEDGER_WORKERS", "2"))
# gevent in front, the app in threads (web/gunicorn_worker.py): every
# connection is a greenlet, so a slow client costs a socket, not a thread; a
# request reaches one of the worker's `threads` only once it has fully arrived
# (its header and body reads are bounded: LEDGER_HEADER_TIMEOUT,
# LEDGER_BODY_TIMEOUT), and gunicorn's own errors are answered as JSON.
# The threads share the worker's pool (LEDGER_POOL_SIZE connections), so a few
# threads per connection-limited worker keep the database busy.
worker_class = "web.gunicorn_worker.LedgerWorker"
threads = int(os.environ.get("LEDGER_THREADS", "4"))
worker_connections = int(os.environ.get("LEDGER_WORKER_CONNECTIONS", "1000"))
# The served API remembers an active API key for at most this long (seconds)
# in each worker: one query (and its CPU, on both sides) fewer per request,
# and a revoked key is refused everywhere within that bound (web/api_keys.py).
# Set in the master before the workers fork (on_starting), so web.create_app
# reads it there; 0: no cache.
API_KEY_CACHE_SECONDS_DEFAULT = "1"
# Never import the app in the master: each worker creates it (and its
# psycopg pool) after the fork.
preload_app = False
loglevel = os.environ.get("LEDGER_LOG_LEVEL", "info")
accesslog = "-"
# gunicorn's logger, its default access line built from the atoms it names.
logger_class = "web.gunicorn_worker.LedgerLogger"
graceful_timeout = 10
# Not 0: gunicorn reads each request's headers under the worker's header
# timeout (LEDGER_HEADER_TIMEOUT) only on connections it may keep alive.
keepalive = 2
timeout = 30


def on_starting(server: Any) -> None:
    """The served stack's defaults that the app reads from the environment."""
    os.environ.setdefault("LEDGER_API_KEY_CACHE_SECONDS", API_KEY_CACHE_SECONDS_DEFAULT)


def worker_exit(server: Any, worker: Any) -> None:
    """Close the worker's pool as it exits (atexit would too; this is explicit)."""
    import sys

    module = sys.modules.get("web.wsgi")
    if module is not None:
        from web.app import close_app

        close_app(module.app)
