"""What the service tells its operators: ``GET /metrics`` and one JSON log line per request.

**Metrics** (Prometheus text format, ``prometheus_client``). Per request:
``ledger_http_requests_total`` by method, route (the URL rule, e.g.
``/balance/<path:owner_id>``, never the raw path) and status,
``ledger_http_request_duration_seconds`` by method and route,
``ledger_http_errors_total`` by the ``code`` of the error body (a ledger
error's name such as ``insufficient_credits`` for SQLSTATE LG001, or the
HTTP layer's, such as ``unauthorized``), and ``ledger_call_duration_seconds``
by ledger_py method. The pool (psycopg_pool's ``get_stats``) is copied into gauges and
counters at most once a second per process, at the end of a request or at a
scrape. What lives in the database (event and webhook backlogs, recent
deliveries and expiries) is read at scrape time by ``DatabaseCollector``:
one call of ``ledger.metrics_snapshot()`` under a short statement timeout,
at most once per ``LEDGER_METRICS_DB_INTERVAL`` seconds per process, never
per request.

Under gunicorn with several workers, ``web.gunicorn_conf`` gives every start
a fresh ``PROMETHEUS_MULTIPROC_DIR`` before the workers fork: each worker
writes its figures to files there and a scrape, whichever worker answers
it, reads them all (``MultiProcessCollector``); a worker that exits is
marked dead, so its live gauges (the pool) leave the sums while its counters
stay.

**Logs.** Every request ends with one JSON line on the ``ledger.requests``
logger (stderr): time, level, request id, method, route, status, duration,
the app of the API key when one was accepted, and the ledger_py method the
view called (``ledger_fn``) with its duration (``ledger_ms``); ``db_calls``
and ``db_ms`` count every ledger call of the request (the API key lookup
too). Nothing else of the request is logged: no path (owner ids), query,
header, token or body. The request id is the client's ``X-Request-Id`` when
it is well formed (1 to 128 characters among letters, digits and ``._:-``),
otherwise a new one; the response carries it back in ``X-Request-Id``.

The request id is not sent to PostgreSQL: a SQL comment would make every
statement's text unique, so none would stay prepared, and ``SET
application_name`` (or ``set_config``) costs a statement per request on a
path that is otherwise one round trip. The log line's ``ledger_fn`` and
timing are what ties a request to the database's work.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ledger_py.client import Ledger
from ledger_py.errors import LedgerError
from ledger_py.queries import ALL_CALLS
from web.auth import auth
from web.database import connection
from web.errors import api_error

REQUEST_ID_HEADER = "X-Request-Id"
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no URL rule matched

# Seconds: most of the API answers in a few milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
POOL_REFRESH_SECONDS = 1.0
DB_STATEMENT_TIMEOUT = "2s"  # bounds the scrape's query
DB_POOL_WAIT_SECONDS = 2.0

request_log = logging.getLogger("ledger.requests")

_LEDGER_METHODS = frozenset(call.name for call in ALL_CALLS)


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


# ---- per request ------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """What one request did, filled in as it runs (a context variable holds it)."""

    request_id: str
    start: float
    calls: list[tuple[str, float]] = field(default_factory=list)


_current: ContextVar[RequestRecord | None] = ContextVar("ledger_request", default=None)


def current_request_id() -> str | None:
    record = _current.get()
    return None if record is None else record.request_id


def request_id_from(header: str | None) -> str:
    """The client's id when well formed, else a new one (32 hex digits, random)."""
    if header and _WELL_FORMED_ID.fullmatch(header):
        return header
    return os.urandom(16).hex()


class TimedLedger:
    """The Ledger as the web layer sees it: every attribute is the Ledger's,
    and its SQL API methods (``queries.ALL_CALLS``) are timed into the
    request's record and the ``ledger_call_duration_seconds`` histogram.
    Wrapped methods are kept on the instance, so a method is looked up once."""

    def __init__(self, ledger: Ledger, histogram: Histogram) -> None:
        self._ledger = ledger
        self._histogram = histogram

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ledger, name)
        if name not in _LEDGER_METHODS or not callable(attr):
            return attr
        timed = _timed(name, attr, self._histogram.labels(name))
        self.__dict__[name] = timed
        return timed


def _timed(name: str, method: Callable[..., Any], observed: Any) -> Callable[..., Any]:
    observe = observed.observe
    clock = time.perf_counter

    def call(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return method(*args, **kwargs)
        finally:
            elapsed = clock() - start
            observe(elapsed)
            record = _current.get()
            if record is not None:
                record.calls.append((name, elapsed))

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


# ---- metrics ----------------------------------------------------------------------------------


class Metrics:
    """The metric objects of one app, in its own registry (single process) or
    in the multiprocess files (PROMETHEUS_MULTIPROC_DIR, read at scrape time)."""

    def __init__(self, ledger: Ledger, db_interval: float) -> None:
        self.multiprocess_dir = _multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ledger_http_requests",
            "HTTP requests answered, by method, route (URL rule) and status",
            ("method", "route", "status"),
            registry=r,
        )
        self.duration = Histogram(
            "ledger_http_request_duration_seconds",
            "Time from the request reaching the app to its response, by method and route",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "ledger_http_errors",
            "Error responses by the code of their body (a ledger error's name, e.g."
            " insufficient_credits for LG001, or the HTTP layer's, e.g. unauthorized)",
            ("code",),
            registry=r,
        )
        self.calls = Histogram(
            "ledger_call_duration_seconds",
            "Duration of the ledger_py calls the web layer makes, by method",
            ("function",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pool_size = Gauge(
            "ledger_pool_size",
            "Connections the pools hold (open)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_available = Gauge(
            "ledger_pool_available",
            "Idle connections of the pools",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_max = Gauge(
            "ledger_pool_max",
            "Connections the pools may open",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "ledger_pool_requests_waiting",
            "Requests waiting now for a pool connection",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_counters = {
            "requests_num": Counter(
                "ledger_pool_requests", "Connections asked of the pools", registry=r
            ),
            "requests_queued": Counter(
                "ledger_pool_waits", "Connection requests that had to wait", registry=r
            ),
            "requests_wait_ms": Counter(
                "ledger_pool_wait_seconds", "Time spent waiting for a connection", registry=r
            ),
            "requests_errors": Counter(
                "ledger_pool_timeouts",
                "Connection requests that failed (timed out or the pool closed)",
                registry=r,
            ),
            "connections_lost": Counter(
                "ledger_pool_connections_lost",
                "Pool connections found broken and replaced",
                registry=r,
            ),
        }
        self._ledger = ledger
        self._pool_seen: dict[str, int] = {}
        self._pool_at = 0.0
        self._pool_lock = threading.Lock()
        self.database = DatabaseCollector(ledger, db_interval)
        if self.multiprocess_dir is None:
            r.register(self.database)
        # Now, so that a worker that has served nothing yet still counts its pool.
        self.refresh_pool(time.monotonic(), force=True)

    def refresh_pool(self, now: float, force: bool = False) -> None:
        """Copy the pool's stats into the metrics (at most once a second unless forced)."""
        if not force and now - self._pool_at < POOL_REFRESH_SECONDS:
            return
        if not self._pool_lock.acquire(blocking=force):
            return  # another thread is at it
        try:
            self._pool_at = now
            stats = self._ledger.pool.get_stats()
            self.pool_size.set(stats.get("pool_size", 0))
            self.pool_available.set(stats.get("pool_available", 0))
            self.pool_max.set(stats.get("pool_max", 0))
            self.pool_waiting.set(stats.get("requests_waiting", 0))
            for key, counter in self.pool_counters.items():
                value = stats.get(key, 0)
                delta = value - self._pool_seen.get(key, 0)
                if delta > 0:
                    counter.inc(delta / 1000 if key.endswith("_ms") else delta)
                self._pool_seen[key] = value
        finally:
            self._pool_lock.release()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape's body and content type (the text format unless the
        scraper's Accept asks for OpenMetrics)."""
        self.refresh_pool(time.monotonic(), force=True)
        encoder, content_type = choose_encoder(accept or "")
        if self.multiprocess_dir is None:
            return encoder(self.registry), content_type
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(self.database)
        return encoder(registry), content_type


class DatabaseCollector(Collector):
    """The figures of ``ledger.metrics_snapshot()``, read at scrape time (at most
    once per ``interval`` seconds: scrapers cannot load the database more)."""

    def __init__(self, ledger: Ledger, interval: float) -> None:
        self._ledger = ledger
        self._interval = interval
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._families: list[Metric] = []

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self._interval:
                self._families = self._read()
                self._at = now
            families = self._families
        yield from families

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "ledger_metrics_database_up",
            "1 when the scrape's query of the database answered, else 0",
        )
        start = time.perf_counter()
        try:
            with connection(self._ledger, timeout=DB_POOL_WAIT_SECONDS) as conn:
                conn.execute(f"SET LOCAL statement_timeout = '{DB_STATEMENT_TIMEOUT}'")
                snap = self._ledger.metrics_snapshot(conn=conn)
        except LedgerError as exc:
            logging.getLogger("ledger.metrics").warning(
                "metrics: the database figures could not be read: %s", exc.message
            )
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        took = GaugeMetricFamily(
            "ledger_metrics_database_seconds", "How long the scrape's query of the database took"
        )
        took.add_metric([], time.perf_counter() - start)

        def gauge(name: str, doc: str, value: int) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        recent = GaugeMetricFamily(
            "ledger_webhook_deliveries_recent",
            "Webhook deliveries finished in the last 5 minutes, by result",
            labels=("result",),
        )
        recent.add_metric(["delivered"], snap.deliveries_delivered_recent)
        recent.add_metric(["failed"], snap.deliveries_failed_recent)
        return [
            up,
            took,
            gauge(
                "ledger_events_unrelayed",
                "Events written by committed changes and not yet copied into the feed",
                snap.events_unrelayed,
            ),
            gauge(
                "ledger_event_feed_position",
                "The feed's last position (its rate: events relayed per second)",
                snap.feed_position,
            ),
            gauge(
                "ledger_webhook_fan_out_lag",
                "Feed positions the slowest active webhook endpoint has not fanned out yet",
                snap.fan_out_lag,
            ),
            gauge(
                "ledger_webhook_deliveries_pending",
                "Webhook deliveries not delivered yet and not given up",
                snap.deliveries_pending,
            ),
            recent,
            gauge(
                "ledger_grants_expired_recent",
                "grant.expired events relayed in the last 5 minutes",
                snap.grants_expired_recent,
            ),
            gauge(
                "ledger_expiry_due_owners",
                "Owners with a grant or hold past its expiry that no write has recorded yet",
                snap.expiry_due_owners,
            ),
        ]


# ---- logs -------------------------------------------------------------------------------------


_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, request id, and
    the record's ``fields`` (request lines) or its message."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            request_id = current_request_id()
            if request_id is not None:
                line["request_id"] = request_id
            line["message"] = record.getMessage()
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
        return _encode(line)


def _configure_logging(app: Flask) -> None:
    """JSON lines on stderr for the request log and the app's own messages
    (once per process; a handler already there is left alone)."""
    level = os.environ.get("LEDGER_LOG_LEVEL", "info").upper()
    if not request_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        request_log.addHandler(handler)
        request_log.propagate = False
        request_log.setLevel(level)
    if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn"):
        # Under gunicorn the app's warnings (a 503's cause, an unhandled
        # error) become JSON lines with the request id too.
        from flask.logging import default_handler

        app.logger.removeHandler(default_handler)
        if not app.logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(JsonFormatter())
            app.logger.addHandler(handler)


# ---- the hooks --------------------------------------------------------------------------------


@dataclass
class Monitoring:
    metrics: Metrics
    token: str | None


def _setting(app: Flask, name: str) -> Any:
    """The config's value, else the environment variable's, else None."""
    value = app.config.get(name)
    if value is None:
        value = os.environ.get(name)
    return None if value == "" else value


def timed_ledger(ledger: Ledger, app: Flask) -> Ledger:
    """The Ledger the views use: its calls timed (see TimedLedger). Also
    creates the app's metrics (``install`` registers the hooks)."""
    given = _setting(app, "LEDGER_METRICS_DB_INTERVAL")
    interval = 5.0 if given is None else float(given)
    token = _setting(app, "LEDGER_METRICS_TOKEN")
    metrics = Metrics(ledger, interval)
    app.extensions["ledger_monitoring"] = Monitoring(metrics=metrics, token=token or None)
    return cast(Ledger, TimedLedger(ledger, metrics.calls))


def install(app: Flask) -> None:
    """The request hooks and ``GET /metrics``. Call it before any other
    ``before_request`` hook, so that every request gets its id and timer."""
    monitoring: Monitoring = app.extensions["ledger_monitoring"]
    metrics = monitoring.metrics
    _configure_logging(app)
    # Each metric's child per label values, looked up once (labels() validates
    # and locks on every call).
    requests_child = _children(metrics.requests)
    duration_child = _children(metrics.duration)
    errors_child = _children(metrics.errors)

    @app.before_request
    def start_request() -> None:
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        _current.set(RequestRecord(request_id, time.perf_counter()))

    @app.after_request
    def finish_request(response: Response) -> Response:
        record = _current.get()
        if record is None:  # pragma: no cover - start_request always runs first
            return response
        elapsed = time.perf_counter() - record.start
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        method = request.method if request.method in _METHODS else "OTHER"
        status = response.status_code
        requests_child(method, route, str(status)).inc()
        duration_child(method, route).observe(elapsed)
        code = None
        if status >= 400 and response.is_json:
            body = response.get_json(silent=True)
            if isinstance(body, dict) and isinstance(body.get("code"), str):
                code = body["code"]
                errors_child(code).inc()
        response.headers[REQUEST_ID_HEADER] = record.request_id
        metrics.refresh_pool(time.monotonic())
        # A 503 is the database's state (unreachable, a lock wait); another 5xx a fault.
        level = (
            logging.INFO if status < 500 else logging.WARNING if status == 503 else logging.ERROR
        )
        if request_log.isEnabledFor(level):
            fields: dict[str, Any] = {
                "request_id": record.request_id,
                "method": request.method,
                "route": rule.rule if rule is not None else None,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
            }
            holder = _key_holder()
            if holder is not None:
                fields["app"] = holder
            if code is not None:
                fields["code"] = code
            if record.calls:
                name, took = record.calls[-1]
                fields["ledger_fn"] = name
                fields["ledger_ms"] = round(took * 1000, 3)
                fields["db_calls"] = len(record.calls)
                fields["db_ms"] = round(sum(t for _, t in record.calls) * 1000, 3)
            # A record made here, not by Logger.log: no walk up the stack for
            # the caller's file and line, which the line does not carry.
            entry = logging.LogRecord(request_log.name, level, "", 0, "request", None, None)
            entry.fields = fields
            request_log.handle(entry)
        return response

    @app.teardown_request
    def end_request(_exc: BaseException | None) -> None:
        _current.set(None)

    @app.get("/metrics")
    @app.doc(  # type: ignore[attr-defined,untyped-decorator]
        summary="Metrics in the Prometheus text format",
        tags=["Service"],
        responses={
            200: {
                "description": "requests, latencies, errors, pool, event and webhook backlogs",
                "content": {CONTENT_TYPE_PLAIN_0_0_4.split(";")[0]: {"schema": {"type": "string"}}},
            },
            401: "LEDGER_METRICS_TOKEN is set and the request does not carry it",
        },
    )
    def metrics_view() -> Any:
        """No API key: open like most exporters, or behind `Authorization: Bearer
        <LEDGER_METRICS_TOKEN>` when the server sets one."""
        if monitoring.token is not None:
            sent = request.headers.get("Authorization", "")
            expected = f"Bearer {monitoring.token}"
            if not hmac.compare_digest(sent.encode(), expected.encode()):
                raise api_error(401, "unauthorized", "send Authorization: Bearer <metrics token>")
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        return Response(body, content_type=content_type)


def _children(metric: Any) -> Callable[..., Any]:
    """metric.labels(*values), remembered per tuple of values."""
    known: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        found = known.get(values)
        if found is None:
            found = known.setdefault(values, metric.labels(*values))
        return found

    return child


def _key_holder() -> str | None:
    """The app of the request's accepted API key, if any."""
    holder = auth.current_user
    app_name = getattr(holder, "app", None)
    return app_name if isinstance(app_name, str) else None
