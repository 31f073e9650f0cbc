"""The served stack's logger (web.gunicorn_worker.LedgerLogger) writes the
access line gunicorn's own logger writes, for its default format and for
any other; real gunicorn requests and responses over a socketpair."""

from __future__ import annotations

import io
import logging
import socket
from datetime import timedelta
from typing import Any

import pytest
from gunicorn import glogging
from gunicorn.config import Config
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.parser import RequestParser

from web.gunicorn_worker import LedgerLogger

REQUESTS = {
    "post": b"POST /ledger?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: wrk \"q\"\r\n"
    b"Referer: http://r/\r\nContent-Length: 0\r\n\r\n",
    "basic auth": b"GET /balance/%C3%A9 HTTP/1.0\r\nAuthorization: Basic dXNlcjpwdw==\r\n\r\n",
    "bare": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
}
FORMATS = {
    "default": None,
    "custom": '%(m)s %(U)s %(q)s %(H)s %(B)s {user-agent}i {content-type}o %(p)s "%(a)s"',
}


def _line(logger_class: type, raw: bytes, access_format: str | None) -> str:
    cfg = Config()
    cfg.set("accesslog", "-")
    if access_format is not None:
        cfg.set("access_log_format", access_format)
    logger = logger_class(cfg)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.access_log.handlers = [handler]
    client, server = socket.socketpair()
    with client, server:
        client.sendall(raw)
        req = next(iter(RequestParser(cfg, server, ("10.0.0.7", 5555))))
        resp, environ = gunicorn_wsgi.create(req, server, ("10.0.0.7", 5555), "x", cfg)
        resp.start_response("201 CREATED", [("Content-Type", "application/json")])
        resp.sent = 123
        logger.access(resp, req, environ, timedelta(seconds=0))
    return out.getvalue()


@pytest.mark.parametrize("request_name", REQUESTS)
@pytest.mark.parametrize("format_name", FORMATS)
def test_the_access_line_is_gunicorns(
    request_name: str, format_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(glogging.Logger, "now", lambda self: "[29/Nov/2026:12:00:00 +0000]")
    ours = _line(LedgerLogger, REQUESTS[request_name], FORMATS[format_name])
    theirs = _line(glogging.Logger, REQUESTS[request_name], FORMATS[format_name])
    assert ours == theirs
    assert ours.count("\n") == 1 and len(ours) > 10


def test_the_default_format_builds_only_its_atoms() -> None:
    cfg = Config()
    logger: Any = LedgerLogger(cfg)
    client, server = socket.socketpair()
    with client, server:
        client.sendall(REQUESTS["post"])
        req = next(iter(RequestParser(cfg, server, ("10.0.0.7", 5555))))
        resp, environ = gunicorn_wsgi.create(req, server, ("10.0.0.7", 5555), "x", cfg)
        resp.start_response("200 OK", [])
        atoms = logger.atoms(resp, req, environ, timedelta(seconds=0))
    assert sorted(atoms) == sorted("hlutrsbfa")
