"""The served API over real HTTP when the database makes it wait or goes away.

A private PostgreSQL (it is restarted) and `ledger serve` as a separate
process on 127.0.0.1:
- a debit behind another transaction's lock answers 503 `lock_timeout` with
  Retry-After after LEDGER_LOCK_TIMEOUT, writes nothing, and the retry with
  the same Idempotency-Key is written once the lock is free;
- while the database is down, 503 bodies (/health and the API) carry the
  stable code and a short message, never the host, the port or
  PostgreSQL's own text, which go to the server's log;
- once the database is back after a restart, the very first /health and the
  very first write succeed (the pooled connections it ended are replaced).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger_cli.pgserver import throwaway_server
from ledger_py import Ledger
from ledger_py.migrate import migrate
from ledger_py.tokens import create_api_key
from tests.web.helpers import bearer, call, free_port

ROOT = Path(__file__).resolve().parents[2]
UNAVAILABLE_DETAIL = "the ledger's database is unreachable; retry later"
OUTAGE_SECONDS = 20.0


@pytest.fixture(scope="module")
def private_server() -> Iterator[Any]:
    server = throwaway_server()
    try:
        migrate(server.url(database="test"))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(private_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(base URL, core API token, log path) of `ledger serve` on the private server."""
    url = private_server.url(database="test")
    with Ledger(url, max_size=1) as ledger:
        token = create_api_key(ledger, app="core").token
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_PORT": str(port),
        "LEDGER_WORKERS": "1",
        "LEDGER_POOL_SIZE": "4",
        "LEDGER_LOCK_TIMEOUT": "0.5",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
    }
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger_cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if call(base, "GET", "/health")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            yield base, token, log
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    assert "Traceback" not in log.read_text()


def wait_until_port_is_free(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.1)
    raise AssertionError(f"port {port} still busy")


def write(base: str, token: str, owner: str, operation: str, amount: int, key: str) -> Any:
    return call(
        base,
        "POST",
        "/ledger",
        {"owner_id": owner, "operation": operation, "amount": amount},
        bearer(token, **{"Idempotency-Key": key}),
    )


def test_a_debit_behind_an_open_transaction_answers_503_then_the_retry_is_written(
    private_server: Any, served: Any
) -> None:
    base, token, _ = served
    assert write(base, token, "held-owner", "CREDIT_ADD", 10, "fund-held")[0] == 201
    with (
        psycopg.connect(private_server.url(database="test")) as held,
        Ledger(private_server.url(database="test"), max_size=1) as side,
    ):
        side.post_entry(
            owner_id="held-owner",
            app="core",
            operation="CREDIT_ADD",
            idempotency_key="held-in-txn",
            amount=1,
            conn=held,
        )
        started = time.monotonic()
        status, headers, body = write(base, token, "held-owner", "CREDIT_SPEND", 4, "spend-held")
        waited = time.monotonic() - started
        assert status == 503, body
        assert body["code"] == "lock_timeout" and body["detail"], body
        assert headers.get("Retry-After") == "1"
        assert waited < 2.0
        # Requests about other owners still answer meanwhile.
        assert call(base, "GET", "/balance/free-owner", headers=bearer(token))[0] == 200
        held.commit()
    status, _, body = write(base, token, "held-owner", "CREDIT_SPEND", 4, "spend-held")
    assert status == 201 and body["balance"] == 10 + 1 - 4, body
    status, _, body = write(base, token, "held-owner", "CREDIT_SPEND", 4, "spend-held")
    assert status == 200 and body["balance"] == 7, body  # a replay: written once


def test_while_the_database_is_down_503_bodies_hide_the_server(
    private_server: Any, served: Any
) -> None:
    """And the first request once it is back succeeds, however long it was away.

    The outage lasts OUTAGE_SECONDS from the first refused connection: with
    psycopg_pool's default reconnect_timeout (300 s) its retries would come at
    1, 3, 7, 15, 31 s, so the database back at 20 s would wait until 31 s for
    the pool's next try, and the /health below (3 s) would answer 503."""
    base, token, log = served
    port = private_server.settings["port"]
    assert call(base, "GET", "/health")[0] == 200
    private_server.terminate(signal.SIGINT)  # fast shutdown: sessions are ended
    try:
        wait_until_port_is_free(port)
        first_refused = time.monotonic()
        status, headers, body = call(base, "GET", "/health")
        assert status == 503
        assert body == {
            "status": "unhealthy",
            "database": "unreachable",
            "code": "ledger_unavailable",
            "detail": UNAVAILABLE_DETAIL,
        }
        assert headers.get("Retry-After") == "5"
        status, headers, body = call(base, "GET", "/balance/someone", headers=bearer(token))
        assert status == 503 and headers.get("Retry-After") == "5"
        assert body == {"code": "ledger_unavailable", "detail": UNAVAILABLE_DETAIL}
        assert f"port {port}" in log.read_text()  # the details went to the log
        time.sleep(max(0.0, first_refused + OUTAGE_SECONDS - time.monotonic()))
    finally:
        private_server.start()
    status, _, body = call(base, "GET", "/health")
    assert status == 200, body


def test_after_a_restart_while_idle_the_first_requests_succeed(
    private_server: Any, served: Any
) -> None:
    """Every pooled connection dies in the restart; none may fail a request."""
    base, token, _ = served
    port = private_server.settings["port"]
    assert write(base, token, "restart-owner", "CREDIT_ADD", 5, "before-restart")[0] == 201
    with ThreadPoolExecutor(8) as pool:  # several pooled connections, all idle afterwards
        assert set(pool.map(lambda _: call(base, "GET", "/health")[0], range(16))) == {200}

    private_server.terminate(signal.SIGINT)
    wait_until_port_is_free(port)
    private_server.start()  # no request while the database was away

    status, _, body = call(base, "GET", "/health")
    assert status == 200 and body == {"status": "healthy", "database": "ok"}, body
    for n in range(6):
        status, _, body = write(base, token, "restart-owner", "CREDIT_ADD", 1, f"after-{n}")
        assert status == 201, body
    assert body["balance"] == 5 + 6
