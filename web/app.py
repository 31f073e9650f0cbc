"""The Flask app factory: one Ledger (one psycopg pool) per process.

``create_app(config)`` builds the app and opens the pool; it is closed at
interpreter exit (``atexit``; gunicorn's workers exit through it too) or by
``close_app(app)``. Under gunicorn every worker imports ``web.wsgi`` after
the fork (no ``preload_app``), so each worker opens its own pool: a pool's
sockets are never shared across processes.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import swagger_ui_bundle  # type: ignore[import-untyped]
from apiflask import APIFlask
from flask import Flask, jsonify, make_response, render_template, send_from_directory, url_for
from werkzeug.routing import IntegerConverter, Map

from ledger_py.client import DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT, Ledger
from ledger_py.errors import LedgerError, LedgerUnavailable
from web import console, example_app, ledger_api, monitoring, webhooks
from web.api_keys import KeyResolver
from web.database import connection
from web.errors import RETRY_AFTER_SECONDS, register_error_handlers, unavailable_body
from web.request_input import install as install_request_input
from web.schemas import ERROR_SCHEMA, HealthOut

MAX_BODY_BYTES = 4 * 1024 * 1024  # a 10,000-item batch fits
HEALTH_TIMEOUT_SECONDS = 3.0

DESCRIPTION = """\
HTTP interface of the shared credit ledger. Every rule (amounts, owners,
operations, limits, holds, idempotency) is decided by the ledger's PL/pgSQL
functions; this API carries requests to them.

**Authentication**: `Authorization: Bearer <token>`, an API key of one app
(`ledger keys create APP`). The key decides the app a request acts for.

**Idempotency**: writes take an `Idempotency-Key` header (or a `nonce` body
field). First write: 201. The same request again: 200, the original body and
`Idempotent-Replayed: true`. The same key with another request: 409.

**Errors**: `{"code": ..., "detail": ..., ...fields}` with 400 malformed
JSON (duplicate keys, NaN, nesting over 64 levels included; `reason` says
which) or a path or query string that is not UTF-8, 401 missing or bad API
key, 402 insufficient credits, 403 operation of another app, 404 unknown
entry/hold/grant/content, 409 idempotency conflict, limit reached, hold not
active, already reversed or nothing left of a grant to void, 413 body over
4 MiB, 415 a body that is not
`application/json`, 422 validation, 502 the example app's content work
failed (hold released), 503 database unreachable or a lock wait over its
bound (`Retry-After`). The server itself answers, in the same shape, 400
`malformed_request` (bad request line, headers or framing), 408
`request_timeout` (body not received in time), 414 `uri_too_long` and 431
`headers_too_large`.
"""


class BigintConverter(IntegerConverter):
    """``<int:...>`` bounded to 1 .. 2**63-1, the ids of the ledger's tables."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min", 1)
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


@dataclass
class WebState:
    """What one app instance holds (``app.extensions["ledger_web"]``)."""

    ledger: Ledger
    keys: KeyResolver
    owns_ledger: bool


def _version() -> str:
    try:
        return metadata.version("shared-ledger")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def create_app(config: dict[str, Any] | None = None) -> APIFlask:
    """Build the app. Config keys (environment variables of the same name
    are the fallback): LEDGER_DATABASE_URL (required unless LEDGER, a Ledger
    instance, is given), LEDGER_POOL_SIZE (default 5), LEDGER_LOCK_TIMEOUT and
    LEDGER_STATEMENT_TIMEOUT (seconds, default 5 and 60; "none": the
    server's setting), API_KEY_CACHE_SECONDS (default 0: every request asks
    the database; the served stack's web/gunicorn_conf.py sets 1), CONTENT_WORK (the example
    app's work function), MAX_CONTENT_LENGTH (default 4 MiB)."""
    app = APIFlask(
        "web",
        title="Shared credit ledger",
        version=_version(),
        spec_path="/openapi.json",
        docs_path="/docs",
        docs_ui="swagger-ui",
    )
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        # 3.0: the Swagger UI that swagger-ui-bundle ships (4.x) renders 3.0, not 3.1.
        OPENAPI_VERSION="3.0.3",
        API_KEY_CACHE_SECONDS=float(os.environ.get("LEDGER_API_KEY_CACHE_SECONDS", "0")),
        CONTENT_WORK=example_app.default_work,
        DESCRIPTION=DESCRIPTION,
        HTTP_ERROR_SCHEMA=ERROR_SCHEMA,
        VALIDATION_ERROR_SCHEMA=ERROR_SCHEMA,
        # Documentation assets are served by this app (offline; no CDN).
        # Relative URLs: they resolve against /docs and /redoc, also behind a prefix.
        SWAGGER_UI_CSS="docs/assets/swagger-ui.css",
        SWAGGER_UI_BUNDLE_JS="docs/assets/swagger-ui-bundle.js",
        SWAGGER_UI_STANDALONE_PRESET_JS="docs/assets/swagger-ui-standalone-preset.js",
        DOCS_FAVICON="docs/assets/favicon-32x32.png",
        REDOC_USE_GOOGLE_FONT=False,
        SECURITY_SCHEMES=None,
    )
    app.config.update(config or {})

    state = _make_state(app)
    app.extensions["ledger_web"] = state
    # Request ids, timers, JSON request logs, GET /metrics (web/monitoring.py):
    # first, so that every request, even one refused by a later hook, is counted.
    monitoring.install(app)
    # One strict JSON reader for every body, UTF-8 paths (web/request_input.py).
    install_request_input(app)

    # Path ids are SQL bigints: a larger number matches no route (404)
    # instead of reaching the database as an out-of-range value.
    app.url_map.converters["int"] = BigintConverter
    register_error_handlers(app)
    app.register_blueprint(ledger_api.bp)
    app.register_blueprint(example_app.bp)
    app.register_blueprint(webhooks.events_bp)
    app.register_blueprint(webhooks.bp)
    # The operators' console (/console): HTML pages, signed-in people only.
    console.register(app)
    _register_service_routes(app)
    return app


def _make_state(app: Flask) -> WebState:
    given = app.config.get("LEDGER")
    if given is not None:
        ledger, owns = given, False
    else:
        url = app.config.get("LEDGER_DATABASE_URL") or os.environ.get("LEDGER_DATABASE_URL")
        if not url:
            raise RuntimeError("LEDGER_DATABASE_URL is not set (config or environment)")
        size = int(app.config.get("LEDGER_POOL_SIZE") or os.environ.get("LEDGER_POOL_SIZE") or 5)
        ledger = Ledger(
            url,
            min_size=1,
            max_size=size,
            lock_timeout=_seconds(app, "LEDGER_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT),
            statement_timeout=_seconds(app, "LEDGER_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT),
        )
        # The pool opens now, in this process (a gunicorn worker: after the
        # fork), rather than at the first request.
        ledger.open()
        owns = True
        atexit.register(ledger.close)
    # The views' calls are timed for the request log and the metrics.
    ledger = monitoring.timed_ledger(ledger, app)
    keys = KeyResolver(ledger, cache_seconds=float(app.config["API_KEY_CACHE_SECONDS"]))
    return WebState(ledger=ledger, keys=keys, owns_ledger=owns)


def _seconds(app: Flask, name: str, default: float) -> float | None:
    """A timeout in seconds from the config or the environment ("none": no limit)."""
    value = app.config.get(name, os.environ.get(name))
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    return float(value)


def close_app(app: Flask) -> None:
    """Close the pool the app opened (a no-op for a Ledger passed in)."""
    state: WebState = app.extensions["ledger_web"]
    if state.owns_ledger:
        state.ledger.close()
        atexit.unregister(state.ledger.close)


def _register_service_routes(app: APIFlask) -> None:
    @app.get("/health")
    @app.output(HealthOut, description="the API and its database answer")
    @app.doc(
        summary="Liveness and database reachability",
        tags=["Service"],
        responses={503: "the database does not answer"},
    )
    def health() -> Any:
        """No API key needed."""
        state: WebState = app.extensions["ledger_web"]
        try:
            # A short wait: a health probe must answer even when the database does not.
            wait = min(HEALTH_TIMEOUT_SECONDS, state.ledger.pool.timeout)
            with connection(state.ledger, timeout=wait) as conn:
                conn.execute("SELECT 1")
        except LedgerError as exc:
            # A Response, so that the 200 schema does not filter the error fields.
            # The details (host, port, PostgreSQL's text) go to the log only.
            app.logger.warning("health: %s (caused by %r)", exc.message, exc.__cause__)
            body = {"status": "unhealthy", "database": "unreachable", **unavailable_body()}
            response = make_response(jsonify(body), 503)
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS[LedgerUnavailable])
            return response
        return {"status": "healthy", "database": "ok"}

    @app.get("/redoc")
    @app.doc(hide=True)
    def redoc() -> Any:
        return render_template(
            "redoc.html",
            title=app.title,
            version=app.version,
            spec_url=url_for("openapi.spec"),
            redoc_js=url_for("static", filename="redoc/redoc.standalone.js"),
            favicon=url_for("swagger_ui_asset", filename="favicon-32x32.png"),
        )

    @app.get("/docs/assets/<path:filename>")
    @app.doc(hide=True)
    def swagger_ui_asset(filename: str) -> Any:
        return send_from_directory(str(swagger_ui_bundle.swagger_ui_path), filename, max_age=86400)
