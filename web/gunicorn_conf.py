"""Gunicorn settings for the ledger's HTTP API (``-c python:web.gunicorn_conf``).

Values come from the same environment variables as the ``ledger`` command;
options given on gunicorn's command line override them.
"""

from __future__ import annotations

import os
from typing import Any

from web.api_keys import SERVED_API_KEY_CACHE_SECONDS

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
API_KEY_CACHE_SECONDS_DEFAULT = SERVED_API_KEY_CACHE_SECONDS
# Never import the app in the master: each worker creates it (and its
# psycopg pool) after the fork.
preload_app = False
loglevel = os.environ.get("LEDGER_LOG_LEVEL", "info")
# The app writes one JSON line per request (web/monitoring.py), with its
# request id, route, app and ledger call: gunicorn's own access log would
# repeat it in another format ("-" turns it on again: LEDGER_ACCESS_LOG=-).
accesslog = os.environ.get("LEDGER_ACCESS_LOG") or None
# gunicorn's logger, its default access line (when on) built from the atoms it names.
logger_class = "web.gunicorn_worker.LedgerLogger"
graceful_timeout = 10
# Not 0: gunicorn reads each request's headers under the worker's header
# timeout (LEDGER_HEADER_TIMEOUT) only on connections it may keep alive.
keepalive = 2
timeout = 30


def on_starting(server: Any) -> None:
    """The served stack's defaults that the app reads from the environment."""
    os.environ.setdefault("LEDGER_API_KEY_CACHE_SECONDS", API_KEY_CACHE_SECONDS_DEFAULT)


def _metrics_directory() -> str:
    """A fresh PROMETHEUS_MULTIPROC_DIR for this start of the master.

    Each worker writes its metrics to files there, and GET /metrics, whichever
    worker answers it, reads them all (web/monitoring.py). A directory left by
    an earlier run would add that run's counts, so every start makes its own
    (under LEDGER_METRICS_DIR, default: the system's temporary folder),
    replacing an inherited one, and removes it at exit. It is set when this
    module is read, before anything imports prometheus_client (which picks its
    multiprocess mode at import) and before any worker forks; reading the
    module again in the same master (a reload) keeps the directory.
    """
    import tempfile

    mine = os.environ.get("LEDGER_METRICS_MASTER") == str(os.getpid())
    current = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if mine and current and os.path.isdir(current):
        return current
    parent = os.environ.get("LEDGER_METRICS_DIR") or None
    path = tempfile.mkdtemp(prefix="ledger-metrics-", dir=parent)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["LEDGER_METRICS_MASTER"] = str(os.getpid())
    # prometheus_client picks its value class (in memory, or in the files of
    # this directory) when first imported, and it already was: reading this
    # module as python:web.gunicorn_conf imports the web package first. Pick
    # again, now that the directory is set (metrics are made after the fork).
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


metrics_directory = _metrics_directory()


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended: its live gauges (its pool) leave the sums; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """The master ends: this start's metrics directory goes with it."""
    import shutil

    shutil.rmtree(metrics_directory, ignore_errors=True)


def worker_exit(server: Any, worker: Any) -> None:
    """Close the worker's pool as it exits (atexit would too; this is explicit)."""
    import sys

    module = sys.modules.get("web.wsgi")
    if module is not None:
        from web.app import close_app

        close_app(module.app)
