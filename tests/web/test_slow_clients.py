"""The served stack (gunicorn, web.gunicorn_conf) against slow and malformed clients,
over raw sockets on 127.0.0.1.

Slow clients cost a socket, not a worker: with 32 connections stuck in their
body and 32 stuck in their headers, /health and a POST of another client
still answer within 2 s. A body that does not arrive in LEDGER_BODY_TIMEOUT
gets 408, headers that do not arrive in LEDGER_HEADER_TIMEOUT close the
connection, any body over the app's limit is 413 however it is sent, and the
server's own errors carry the JSON error shape.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import drop_database, new_database
from tests.web.conftest import serving
from tests.web.helpers import call
from web.app import MAX_BODY_BYTES

# A client that waits longer than this for an answer counts as frozen out.
ANSWER_WITHIN = 2.0


@pytest.fixture
def quick(db_url: str) -> Iterator[tuple[str, str]]:
    """One worker, 1-second body and header timeouts."""
    with serving(
        db_url, LEDGER_WORKERS="1", LEDGER_BODY_TIMEOUT="1", LEDGER_HEADER_TIMEOUT="1"
    ) as served:
        yield served


@pytest.fixture(scope="module")
def served_once(server_url: str, template_url: str) -> Iterator[tuple[str, str]]:
    """One server (default settings) for the tests that change nothing."""
    url = new_database(server_url)
    try:
        with serving(url) as served:
            yield served
    finally:
        drop_database(server_url, url)


def _address(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """One HTTP response read off the socket (status, lower-cased headers, JSON body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, json.loads(body[:length])


def exchange(
    base: str, request: bytes, *, timeout: float = 5.0
) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes (from a thread: the server may answer before it read them all)
    and read the one response."""
    with socket.create_connection(_address(base), timeout=timeout) as sock:

        def send() -> None:
            try:
                sock.sendall(request)
            except OSError:
                pass  # the server answered early and closed

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            return _read_response(sock)
        finally:
            sender.join(timeout)


def _post_head(token: str, path: str = "/ledger", **headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(body: bytes, size: int = 256 * 1024) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in
             range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def _assert_error(answer: tuple[int, dict[str, str], Any], status: int, code: str) -> Any:
    got, headers, body = answer
    assert (got, body.get("code")) == (status, code), (got, body)
    assert headers["content-type"] == "application/json"
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# ---- slow clients ---------------------------------------------------------------------------


def test_slow_bodies_and_headers_do_not_freeze_the_api(db_url: str) -> None:
    with serving(db_url, LEDGER_BODY_TIMEOUT="10", LEDGER_HEADER_TIMEOUT="10") as (base, token):
        hostile: list[socket.socket] = []
        try:
            for i in range(32):  # valid key, Content-Length: 100, 10 bytes of it
                sock = socket.create_connection(_address(base), timeout=5)
                hostile.append(sock)
                sock.sendall(
                    _post_head(token, Content_Length="100", Idempotency_Key=f"slow-{i}")
                    + b'{"owner_id'
                )
            for _ in range(32):  # the start of a request line and one header
                sock = socket.create_connection(_address(base), timeout=5)
                hostile.append(sock)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: te")
            time.sleep(0.3)  # every hostile connection has reached a worker

            for i in range(3):
                status, _, body = exchange(
                    base, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n", timeout=ANSWER_WITHIN
                )
                assert (status, body["status"]) == (200, "healthy")
                entry = json.dumps({"owner_id": "ok", "operation": "CREDIT_ADD", "amount": 1})
                status, _, body = exchange(
                    base,
                    _post_head(token, Content_Length=str(len(entry)), Idempotency_Key=f"ok-{i}")
                    + entry.encode(),
                    timeout=ANSWER_WITHIN,
                )
                assert status == 201, body
            # The hostile ones are still open (their timeouts have not expired), not answered.
            assert all(sock.fileno() != -1 for sock in hostile)
        finally:
            for sock in hostile:
                sock.close()
        assert call(base, "GET", "/balance/ok", headers={"Authorization": f"Bearer {token}"})[
            2
        ]["balance"] == 3


def test_a_body_that_does_not_arrive_gets_408_and_nothing_is_written(
    quick: tuple[str, str],
) -> None:
    base, token = quick
    with socket.create_connection(_address(base), timeout=5) as sock:
        sock.sendall(
            _post_head(token, Content_Length="100", Idempotency_Key="late")
            + b'{"owner_id": "late", "operation": "CREDIT_ADD", "amount": 1'
        )
        answer = _read_response(sock)
        assert sock.recv(1) == b""  # and the connection is closed
    body = _assert_error(answer, 408, "request_timeout")
    assert body["timeout_seconds"] == 1
    auth = {"Authorization": f"Bearer {token}"}
    assert call(base, "GET", "/balance/late", headers=auth)[2]["balance"] == 0


def test_headers_that_do_not_arrive_are_closed(quick: tuple[str, str]) -> None:
    base, _ = quick
    with socket.create_connection(_address(base), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: te")
        assert sock.recv(1024) == b""  # closed after the header timeout, before ours (5 s)
    with socket.create_connection(_address(base), timeout=5) as sock:
        for byte in b"GET /health HTTP/1.1\r\nHost: t\r\n":  # one byte at a time, 50 ms apart
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        assert sock.recv(1024) == b""  # a trickle is bounded by the total time, not per read


# ---- body size, however the body is sent ----------------------------------------------------


def test_any_body_over_the_limit_is_413(quick: tuple[str, str]) -> None:
    base, token = quick
    auth = {"Authorization": f"Bearer {token}"}
    big = b'{"owner_id": "big", "metadata": {"x": "' + b"a" * MAX_BODY_BYTES + b'"}}'
    small = b'{"owner_id": "big", "operation": "CREDIT_ADD", "amount": 1}'
    padded = small + b" " * (5 * 1024 * 1024)
    for request in (
        _post_head(token, Content_Length=str(len(big)), Idempotency_Key="b1") + big,
        _post_head(token, Transfer_Encoding="chunked", Idempotency_Key="b2") + _chunked(big),
        _post_head(token, Transfer_Encoding="chunked", Idempotency_Key="b3") + _chunked(padded),
        _post_head(token, Content_Length=str(len(padded)), Idempotency_Key="b4") + padded,
    ):
        body = _assert_error(exchange(base, request), 413, "body_too_large")
        assert body["max_bytes"] == MAX_BODY_BYTES
    assert call(base, "GET", "/balance/big", headers=auth)[2]["balance"] == 0


def test_a_10000_item_batch_at_the_limit_is_accepted_chunked_or_not(
    quick: tuple[str, str],
) -> None:
    base, token = quick
    items = [
        {"owner_id": f"owner-{i:05d}", "operation": "CREDIT_ADD", "amount": 1}
        for i in range(10_000)
    ]
    body = json.dumps({"entries": items}).encode()
    body += b" " * (MAX_BODY_BYTES - len(body))  # exactly the limit
    status, _, answer = exchange(
        base,
        _post_head(token, "/ledger/batch", Content_Length=str(len(body)), Idempotency_Key="k1")
        + body,
        timeout=30,
    )
    assert status == 201 and len(answer["entries"]) == 10_000, answer
    status, _, again = exchange(
        base,
        _post_head(token, "/ledger/batch", Transfer_Encoding="chunked", Idempotency_Key="k1")
        + _chunked(body),
        timeout=30,
    )
    assert (status, again) == (200, answer)  # the same request: a replay


# ---- the server's own errors are JSON ------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        pytest.param(
            b"POST /ledger HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "malformed_request",
            id="content-length-with-transfer-encoding",
        ),
        pytest.param(
            b"POST /ledger HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n{}",
            400,
            "malformed_request",
            id="bad-content-length",
        ),
        pytest.param(
            b"POST /ledger HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            400,
            "malformed_request",
            id="two-content-lengths",
        ),
        pytest.param(b"HELLO\r\n\r\n", 400, "malformed_request", id="bad-request-line"),
        pytest.param(
            b"POST /ledger HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "malformed_request",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
            431,
            "headers_too_large",
            id="huge-header",
        ),
        pytest.param(
            b"GET /health HTTP/1.1\r\nHost: t\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
            + b"\r\n",
            431,
            "headers_too_large",
            id="too-many-headers",
        ),
        pytest.param(
            b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
            414,
            "uri_too_long",
            id="long-uri",
        ),
        pytest.param(
            b"POST /ledger HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
            "malformed_request",
            id="transfer-encoding-not-chunked",
        ),
    ],
)
def test_the_servers_own_errors_are_json(
    served_once: tuple[str, str], request_bytes: bytes, status: int, code: str
) -> None:
    base, _ = served_once
    _assert_error(exchange(base, request_bytes), status, code)


# ---- one worker, many requests: a database wait holds only its own thread -------------------


def test_a_request_waiting_in_the_database_does_not_block_its_worker(db_url: str) -> None:
    """The app runs in the worker's threads: a request waiting for a row lock holds one
    thread, and /health is served by another."""
    import psycopg

    with serving(db_url, LEDGER_WORKERS="1") as (base, token):
        auth = {"Authorization": f"Bearer {token}"}
        entry = {"owner_id": "locked", "operation": "CREDIT_ADD", "amount": 1}
        assert call(base, "POST", "/ledger", entry, {**auth, "Idempotency-Key": "l0"})[0] == 201
        results: list[int] = []
        with psycopg.connect(db_url) as holder:
            holder.execute(
                "SELECT 1 FROM ledger.accounts WHERE owner_id = 'locked' FOR UPDATE"
            )
            waiting = threading.Thread(
                target=lambda: results.append(
                    call(base, "POST", "/ledger", entry, {**auth, "Idempotency-Key": "l1"})[0]
                )
            )
            waiting.start()
            time.sleep(0.3)  # the POST now waits for the row lock, inside the worker
            for _ in range(3):
                status, _, body = exchange(
                    base, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n", timeout=ANSWER_WITHIN
                )
                assert (status, body["status"]) == (200, "healthy")
            assert waiting.is_alive() and not results
            holder.rollback()
        waiting.join(10)
        assert results == [201]
