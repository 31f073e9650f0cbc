"""Served for real: gunicorn (web.gunicorn_conf, web.wsgi:app) on a free
loopback port, talked to over HTTP; concurrent debits never overdraw."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger_py.client import Ledger
from web.api_keys import create_api_key

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(
    base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, str]]:
    """(base URL, example_app token) of a gunicorn serving db_url with 2 workers."""
    with Ledger(db_url, max_size=2) as ledger:
        _, token = create_api_key(ledger, "example_app")
    port = free_port()
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": db_url,
        "LEDGER_POOL_SIZE": "4",
        "LEDGER_WORKERS": "2",
        "LEDGER_THREADS": "4",
        "LEDGER_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:web.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "/dev/null",
            "web.wsgi:app",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if call(base, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "gunicorn did not answer in 20 s"
            time.sleep(0.1)
        yield base, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        finally:
            if process.stderr:
                process.stderr.close()
            if process.poll() is None:
                process.kill()
                process.wait()


def test_gunicorn_serves_the_api(served: tuple[str, str]) -> None:
    base, token = served
    auth = {"Authorization": f"Bearer {token}"}
    assert call(base, "GET", "/health") == (
        200,
        call(base, "GET", "/health")[1],
        {"status": "healthy", "database": "ok"},
    )
    status, _, body = call(
        base,
        "POST",
        "/ledger",
        {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5},
        {**auth, "Idempotency-Key": "g1"},
    )
    assert status == 201 and body["balance"] == 5
    status, headers, again = call(
        base,
        "POST",
        "/ledger",
        {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5},
        {**auth, "Idempotency-Key": "g1"},
    )
    assert (status, headers["Idempotent-Replayed"], again) == (200, "true", body)
    assert call(base, "GET", "/balance/alice", headers=auth)[2]["balance"] == 5
    assert call(base, "GET", "/balance/alice")[0] == 401
    status, _, spec = call(base, "GET", "/openapi.json")
    assert status == 200 and "/ledger" in spec["paths"]


def test_concurrent_http_debits_never_overdraw(served: tuple[str, str], db_url: str) -> None:
    base, token = served
    auth = {"Authorization": f"Bearer {token}"}
    assert (
        call(
            base,
            "POST",
            "/ledger",
            {"owner_id": "hot", "operation": "CREDIT_ADD", "amount": 25},
            {**auth, "Idempotency-Key": "fund"},
        )[0]
        == 201
    )

    def debit(i: int) -> int:
        return call(
            base,
            "POST",
            "/ledger",
            {"owner_id": "hot", "operation": "CREDIT_SPEND", "amount": 1},
            {**auth, "Idempotency-Key": f"spend-{i}"},
        )[0]

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = Counter(pool.map(debit, range(40)))
    assert statuses == Counter({201: 25, 402: 15})
    assert call(base, "GET", "/balance/hot", headers=auth)[2]["balance"] == 0
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT * FROM ledger.verify()").fetchall() == []
        assert conn.execute(
            "SELECT min(balance) FROM ledger.entries WHERE owner_id = 'hot'"
        ).fetchone() == (0,)
