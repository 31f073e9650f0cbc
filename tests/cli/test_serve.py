"""`ledger serve` over real HTTP: the embedded default (as `make run` uses it) and a given URL."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger_cli.localdb import LocalCluster

from .helpers import free_port, ledger_command, run_ledger


def http(
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@contextmanager
def serving(env: dict[str, str], log: Path, *args: str) -> Iterator[tuple[str, Path]]:
    """Run `ledger serve ARGS` until /health answers; SIGTERM it afterwards (it must exit 0)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(env, PYTHONUNBUFFERED="1", LEDGER_PORT=str(port), LEDGER_WORKERS="1")
    with log.open("w") as out:
        process = subprocess.Popen(
            ledger_command("serve", *args), env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if http("GET", f"{base}/health")[0] == 200:
                        break
                except (urllib.error.URLError, ConnectionError):
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            yield base, log
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_embedded_serve_with_demo_key_then_a_second_run_reuses_the_data(
    data_dir: Path, cli_env: dict[str, str], cli_base: Path
) -> None:
    db_port = free_port()
    env = dict(cli_env, LEDGER_DATA_DIR=str(data_dir), LEDGER_DB_PORT=str(db_port))
    log = cli_base / f"{data_dir.name}.log"

    with serving(env, log, "--demo") as (base, log):
        output = log.read_text()
        token = re.search(r"API key for example_app: (\S+)", output)
        assert token, output
        assert f"curl -s -X POST {base}/ledger" in output
        assert "postgres:***@" in output
        assert LocalCluster(data_dir, port=db_port).password() not in output
        status, body = http(
            "POST",
            f"{base}/ledger",
            token[1],
            {"owner_id": "erin", "operation": "CREDIT_ADD", "amount": 7},
            {"Idempotency-Key": "first-run"},
        )
        assert status == 201, body
        status, docs = http("GET", f"{base}/openapi.json")
        assert status == 200 and "paths" in docs
    # It started the cluster, so it stopped it.
    assert LocalCluster(data_dir, port=db_port).running_pid() is None
    assert "embedded PostgreSQL stopped (data kept)" in log.read_text()

    with serving(env, log, "--demo") as (base, log):
        output = log.read_text()
        assert f"API key for example_app: {token[1]}" in output  # the same key, not a new one
        assert "created API key" not in output
        status, body = http("GET", f"{base}/balance/erin", token[1])
        assert status == 200 and body["balance"] == 7


def test_serve_uses_the_given_database_and_starts_nothing(
    db_url: str, data_dir: Path, cli_env: dict[str, str], cli_base: Path
) -> None:
    env = dict(cli_env, LEDGER_DATABASE_URL=db_url, LEDGER_DATA_DIR=str(data_dir))
    with serving(env, cli_base / "given-url.log") as (base, _):
        status, body = http("GET", f"{base}/health")
        assert status == 200 and body["status"] == "healthy"
    assert not data_dir.exists()


def test_serve_refuses_a_taken_port(cli_env: dict[str, str], data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = run_ledger(
            "serve", "--port", str(port), env=dict(cli_env, LEDGER_DATA_DIR=str(data_dir))
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: port {port} on 127.0.0.1 is already in use: "
        "choose another with --port or LEDGER_PORT\n"
    )
    assert not data_dir.exists()  # refused before starting anything


def test_serve_refuses_an_unmigrated_or_unreachable_database(
    blank_db_url: str, cli_env: dict[str, str]
) -> None:
    result = run_ledger(
        "serve", "--port", str(free_port()), env=dict(cli_env, LEDGER_DATABASE_URL=blank_db_url)
    )
    assert result.returncode == 1
    assert result.stderr.endswith("has no ledger schema: run `ledger migrate` first\n")
    port = free_port()
    result = run_ledger(
        "serve",
        "--port",
        str(free_port()),
        env=dict(cli_env, LEDGER_DATABASE_URL=f"postgresql://u:pw@127.0.0.1:{port}/x"),
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot reach the database at 127.0.0.1:{port}: ")
