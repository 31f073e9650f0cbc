"""The gunicorn worker class of the HTTP API: gevent in front, the app in threads.

Why: with threaded workers a client that sends its headers or its body slowly
(or never) holds one of a few threads until it gives up, so a handful of slow
or hostile clients froze the API. Here each connection is a greenlet: reading
a request costs a socket and a little memory, never a thread. Only a request
that has fully arrived reaches the app, which then runs in one of the
worker's LEDGER_THREADS native threads, exactly as under gunicorn's threaded
workers: psycopg waits in C with the GIL released, and the hot path costs
what it cost before.

On top of gunicorn's gevent worker, this class:

* patches sockets for gevent but not threads, select, time or queue: the
  app's threads, the psycopg pool's threads and psycopg's waits stay native;
* bounds the time to receive a request's headers (and an idle keep-alive
  connection) to LEDGER_HEADER_TIMEOUT seconds: the connection is closed;
* reads the whole body before the app runs, within LEDGER_BODY_TIMEOUT
  seconds (else 408 ``request_timeout``) and up to the app's
  MAX_CONTENT_LENGTH bytes, whether the body has a Content-Length or is
  chunked (else 413 ``body_too_large``); the app then reads it from memory;
* answers gunicorn's own errors (malformed request line or headers, bad
  Content-Length, Content-Length with Transfer-Encoding, a request line or
  headers over the limits, ...) with the API's JSON error shape instead of
  gunicorn's HTML page;
* sends a response's head and its body in one write (gunicorn writes the
  head, then the body): one system call and one wake-up of the client fewer
  per response, on loopback half the kernel's work of sending it.

``LedgerLogger`` (web/gunicorn_conf.py's ``logger_class``) is gunicorn's
logger, its access line cheaper to build (see the class).
"""

from __future__ import annotations

import io
import json
import os
import queue
import socket
import threading
from typing import Any

import gevent
from gevent import monkey
from gevent import socket as gevent_socket
from gevent.hub import Waiter
from gunicorn import glogging
from gunicorn.config import AccessLogFormat
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers.ggevent import GeventWorker

DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_BODY_TIMEOUT = 5.0
READ_SIZE = 64 * 1024
LINGER_SECONDS = 1.0
LINGER_BYTES = 16 * 1024 * 1024

# gunicorn's parse errors -> (status, code) of the JSON error; any other
# ParseException is a malformed request (400).
_STATUS_BY_ERROR: tuple[tuple[type[Exception], int, str, str], ...] = (
    (http_errors.LimitRequestLine, 414, "uri_too_long", "the request line is too long"),
    (
        http_errors.LimitRequestHeaders,
        431,
        "headers_too_large",
        "the request headers are too large or too many",
    ),
    (
        http_errors.UnsupportedTransferCoding,
        501,
        "unsupported_transfer_coding",
        "this Transfer-Encoding is not supported",
    ),
    (http_errors.ExpectationFailed, 417, "expectation_failed", "only Expect: 100-continue"),
    (http_errors.ForbiddenProxyRequest, 403, "forbidden", "proxy request not allowed"),
)
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


def _seconds(name: str, default: float) -> float:
    value = float(os.environ.get(name) or default)
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value}")
    return value


def error_response(status: int, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 response carrying a JSON error; the connection closes after it."""
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + payload


def classify(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, detail) of an error gunicorn raised while reading a request."""
    for cls, status, code, detail in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status, code, detail
    if isinstance(exc, http_errors.ParseException):
        # gunicorn's text names what is wrong (e.g. "Invalid HTTP Header:
        # 'CONTENT-LENGTH'"); it only quotes the client's own request.
        return 400, "malformed_request", f"malformed HTTP request: {str(exc)[:200]}"
    return 500, "internal_error", "internal error"


class BodyRefused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


class LedgerWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with bounded reads, JSON errors and the app in threads."""

    header_timeout = DEFAULT_HEADER_TIMEOUT
    body_timeout = DEFAULT_BODY_TIMEOUT
    max_body_bytes: int | None = None
    sockets: list[Any]
    wsgi: Any

    def init_process(self) -> None:
        self.header_timeout = _seconds("LEDGER_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT)
        self.body_timeout = _seconds("LEDGER_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT)
        # The response class gunicorn's wsgi.create() builds, in this worker process.
        gunicorn_wsgi.Response = OneWriteResponse
        super().init_process()  # patch(), loads the app, serves until exit

    def patch(self) -> None:
        # Sockets (the server's and the clients') become gevent's. Threads,
        # select, time and queue stay native: the app and the psycopg pool run
        # in real threads, and psycopg (which picks its wait function by
        # whether select is patched) waits in C with the GIL released.
        monkey.patch_all(thread=False, select=False, time=False, queue=False)
        self.sockets = [
            gevent_socket.socket(s.FAMILY, gevent_socket.SOCK_STREAM, fileno=s.sock.detach())
            for s in self.sockets
        ]

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # One limit, the app's own (MAX_CONTENT_LENGTH), enforced here while reading.
        config = getattr(self.wsgi, "config", None)
        limit = config.get("MAX_CONTENT_LENGTH") if config is not None else None
        self.max_body_bytes = int(limit) if limit is not None else None
        self.app_threads = AppThreads(max(1, int(self.cfg.threads)))
        self.wsgi = _InThreads(self.wsgi, self.app_threads)

    def timeout_ctx(self) -> gevent.Timeout:
        # Wraps the reading of each request's line and headers (and the wait
        # for the next request on a kept-alive connection): on expiry the
        # connection is closed without an answer.
        return gevent.Timeout(self.header_timeout, False)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        try:
            self._read_body(req, sock)
        except BodyRefused as refused:
            self.log.warning(
                "%s %s from %s: %s %s",
                req.method,
                req.path,
                addr[0] if addr else "-",
                refused.status,
                refused.body["code"],
            )
            try:
                sock.sendall(error_response(refused.status, refused.body))
                if refused.status == 413:
                    _linger(sock)
            except OSError:
                pass
            raise StopIteration() from None  # closes the connection
        return super().handle_request(listener_name, req, sock, addr)

    def _read_body(self, req: Any, sock: Any) -> None:
        """Read the whole body now, bounded in time and size; the app gets it from memory."""
        limit = self.max_body_bytes
        declared = next((v for n, v in req.headers if n == "CONTENT-LENGTH"), None)
        if limit is not None and declared is not None and int(declared) > limit:
            raise BodyRefused(413, _too_large(limit))
        if declared is not None and int(declared) == 0:
            return
        chunked = any(n == "TRANSFER-ENCODING" for n, _ in req.headers)
        if declared is None and not chunked:
            return  # no body (gunicorn reads none either)
        if getattr(req, "_expected_100_continue", False):
            # The client waits for this before it sends the body. Told here,
            # gunicorn must not send it a second time when the app starts.
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            req._expected_100_continue = False
        data = bytearray()
        timer = gevent.Timeout(self.body_timeout)
        timer.start()
        try:
            while True:
                chunk = req.body.read(READ_SIZE)
                if not chunk:
                    break
                data += chunk
                if limit is not None and len(data) > limit:
                    raise BodyRefused(413, _too_large(limit))
        except gevent.Timeout as expired:
            if expired is not timer:
                raise
            raise BodyRefused(
                408,
                {
                    "code": "request_timeout",
                    "detail": f"the request body did not arrive within {self.body_timeout:g} s",
                    "timeout_seconds": self.body_timeout,
                },
            ) from None
        finally:
            timer.close()
        req.body = io.BytesIO(bytes(data))

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status, code, detail = classify(exc)
        where = addr[0] if addr else "-"
        if status == 500:
            self.log.exception("error handling a request from %s", where)
        else:
            self.log.warning("invalid request from %s: %s (%s)", where, code, exc)
        try:
            client.sendall(error_response(status, {"code": code, "detail": detail}))
        except OSError:
            self.log.debug("could not send the error response")


def _linger(sock: Any) -> None:
    """Let a client that is still sending its body read the answer: closing a socket
    with unread input resets the connection, and the client may lose the response.
    Reads (and drops) what comes for at most LINGER_SECONDS and LINGER_BYTES."""
    sock.shutdown(socket.SHUT_WR)
    drained = 0
    with gevent.Timeout(LINGER_SECONDS, False):
        while drained < LINGER_BYTES:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                break
            drained += len(chunk)


def _too_large(limit: int) -> dict[str, Any]:
    return {
        "code": "body_too_large",
        "detail": "the request body is larger than the limit",
        "max_bytes": limit,
    }


class AppThreads:
    """``size`` native threads running calls for the greenlets of this
    process's hub: ``apply(fn, args)`` blocks only the calling greenlet.

    What gevent's ThreadPool does, for this one use and with less on the
    hot path: the calls wait in a C queue (``queue.SimpleQueue``, never
    patched here), each thread takes the next one, puts its outcome in a
    second C queue and wakes the hub through one ``async`` watcher shared by
    every call; the hub hands each outcome to the greenlet waiting for it.
    (gevent's ThreadPool builds a result object with a watcher of its own
    per call and synchronizes through Python-level conditions: about a
    sixth of a worker's Python time per request went there.) A greenlet
    that stops waiting (a timeout) leaves its call to finish in its thread;
    the outcome is dropped."""

    def __init__(self, size: int) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Referenced: a greenlet waiting for a thread keeps the hub's loop running.
        self._wake = gevent.get_hub().loop.async_()
        self._wake.start(self._deliver)
        self.threads = [
            threading.Thread(target=self._work, name=f"ledger-app-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self.threads:
            thread.start()

    def apply(self, fn: Any, args: tuple[Any, ...]) -> Any:
        waiter = Waiter()
        self._jobs.put((waiter, fn, args))
        ok, value = waiter.get()
        if ok:
            return value
        raise value

    def _work(self) -> None:
        while True:
            waiter, fn, args = self._jobs.get()
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # handed to the waiting greenlet
                outcome = (False, exc)
            self._done.put((waiter, outcome))
            self._wake.send()

    def _deliver(self) -> None:
        """In the hub: each finished call's outcome to its greenlet."""
        while True:
            try:
                waiter, outcome = self._done.get_nowait()
            except queue.Empty:
                return
            waiter.switch(outcome)


class _InThreads:
    """Calls a WSGI app in a native thread of ``pool`` and hands its whole response
    back to the calling greenlet, which writes it to the client.

    The app's responses are small JSON documents (the largest: a 10,000-entry
    batch, or a documentation asset), so collecting the body in the thread
    keeps every call of the app, iteration and ``close()`` included, there.
    """

    def __init__(self, app: Any, pool: AppThreads) -> None:
        self.app = app
        self.pool = pool

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        (status, headers), body = self.pool.apply(self._run, (environ,))
        start_response(status, headers)
        return [body]

    def _run(self, environ: dict[str, Any]) -> tuple[tuple[str, list[Any]], bytes]:
        started: list[Any] = []

        def start(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return _no_write

        result = self.app(environ, start)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return (started[0], started[1]), body


class OneWriteResponse(gunicorn_wsgi.Response):  # type: ignore[misc]
    """gunicorn's HTTP/1 response, its head held back until the first body
    bytes (or the end of the response) so that both leave in one write.
    Everything else (status, headers, framing, Content-Length) is gunicorn's."""

    _head: bytes | None = None
    headers_sent: bool
    headers: list[tuple[str, str]]
    chunked: bool
    sock: Any

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        tosend = self.default_headers()
        tosend.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])  # noqa: UP031
        self._head = ("%s\r\n" % "".join(tosend)).encode("latin-1")  # noqa: UP031
        self.headers_sent = True

    def _flush_head(self) -> None:
        head, self._head = self._head, None
        if head:
            self.sock.sendall(head)

    def _emit_body(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head and not self.chunked:
            self.sock.sendall(head + data)
            return
        if head:
            self.sock.sendall(head)
        super()._emit_body(data)

    def sendfile(self, respiter: Any) -> Any:
        # gunicorn's sendfile path writes the head itself: it must be out first.
        self.send_headers()
        self._flush_head()
        return super().sendfile(respiter)

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        self._flush_head()
        super().close()


class LedgerLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger. For gunicorn's default access log format, the
    atoms of the line are the nine it names: gunicorn builds about twenty,
    plus one per request header, response header and environ variable, and
    then copies them all to escape their quotes, for every request (about a
    seventh of a worker's Python time per request). The same values, the
    same line; any other format gets gunicorn's full set."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        if self.cfg.access_log_format != AccessLogFormat.default:
            return super().atoms(resp, req, environ, request_time)
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "l": "-",
            "u": self._get_user(environ) or "-",
            "t": self.now(),
            "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
            "s": status,
            "b": (sent is not None and str(sent)) or "-",
            "f": environ.get("HTTP_REFERER", "-"),
            "a": environ.get("HTTP_USER_AGENT", "-"),
        }


def _no_write(data: bytes) -> None:
    raise RuntimeError("the app must return its body, not write() it")
