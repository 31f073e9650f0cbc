"""The WSGI entry gunicorn serves in the HTTP scenario: the project's app
factory with the benchmark database. Without --preload, each worker imports
this after the fork and opens its own pool."""

from __future__ import annotations

import os

from web import create_app

app = create_app(
    {
        "LEDGER_DATABASE_URL": os.environ["BENCH_DATABASE_URL"],
        "LEDGER_POOL_SIZE": int(os.environ.get("BENCH_POOL_SIZE", "4")),
    }
)
