"""The served stack's response writer (web.gunicorn_worker.OneWriteResponse):
a response's head and body leave in one write, and the bytes on the wire
are gunicorn's own (same head, same framing) for every kind of response.
Real sockets (a socketpair) and gunicorn's own request parser."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.parser import RequestParser

from web.gunicorn_worker import OneWriteResponse


class CountingSocket:
    """A real socket whose sendall calls are recorded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _respond(
    response_class: type,
    request: bytes,
    status: str,
    headers: list[tuple[str, str]],
    body: list[bytes],
) -> list[bytes]:
    client, server = socket.socketpair()
    with client, server:
        client.sendall(request)
        cfg = Config()
        req = next(iter(RequestParser(cfg, server, ("127.0.0.1", 1))))
        counting = CountingSocket(server)
        resp = response_class(req, counting, cfg)
        resp.start_response(status, headers)
        for chunk in body:
            resp.write(chunk)
        resp.close()
        return counting.writes


GET = b"GET /balance/alice HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD = b"HEAD /balance/alice HTTP/1.1\r\nHost: x\r\n\r\n"
JSON = [("Content-Type", "application/json")]

CASES = {
    "json": (GET, "200 OK", [*JSON, ("Content-Length", "12")], [b'{"a": 1}\n...']),
    "empty body": (GET, "204 No Content", [], []),
    "head": (HEAD, "200 OK", [*JSON, ("Content-Length", "12")], [b'{"a": 1}\n...']),
    "chunked": (GET, "200 OK", JSON, [b"abc", b"defg"]),
    "two parts": (GET, "200 OK", [*JSON, ("Content-Length", "7")], [b"abc", b"defg"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_same_bytes_as_gunicorn(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # gunicorn's Date header: the same second for both responses.
    monkeypatch.setattr(gunicorn_wsgi.util, "http_date", lambda: "Sun, 29 Nov 2026 12:00:00 GMT")
    ours = _respond(OneWriteResponse, *CASES[case])
    theirs = _respond(gunicorn_wsgi.Response, *CASES[case])
    assert b"".join(ours) == b"".join(theirs)


def test_head_and_body_leave_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = _respond(OneWriteResponse, *CASES["json"])
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b'\r\n\r\n{"a": 1}\n...')
    # gunicorn alone: the head, then the body.
    assert len(_respond(gunicorn_wsgi.Response, *CASES["json"])) == 2
