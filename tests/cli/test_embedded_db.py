"""The embedded cluster: `ledger db start|stop|status`, restarts, crashes, concurrency."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from ledger_cli import localdb, pgserver
from ledger_cli.cli import cli
from ledger_cli.localdb import LocalCluster

from .helpers import free_port, ledger_command, run_ledger


def invoke(*args: str, data_dir: Path, port: int) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "--db-port", str(port), *args])
    return result.exit_code, result.output


def test_start_status_stop_and_data_survives_a_restart(
    data_dir: Path, cli_env: dict[str, str]
) -> None:
    port = free_port()
    code, out = invoke("db", "status", data_dir=data_dir, port=port)
    assert code == 3 and "ledger db start" in out

    code, out = invoke("db", "start", data_dir=data_dir, port=port)
    assert code == 0, out
    assert "started" in out and f"127.0.0.1:{port}" in out
    cluster = LocalCluster(data_dir, port=port)
    password = cluster.password()
    assert password not in out and "postgres:***@" in out

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")

    code, out = invoke("db", "start", data_dir=data_dir, port=port)
    assert code == 0 and "already running" in out
    code, out = invoke("db", "status", data_dir=data_dir, port=port)
    assert code == 0 and "running" in out

    code, out = invoke("db", "stop", data_dir=data_dir, port=port)
    assert code == 0 and "stopped" in out
    assert cluster.running_pid() is None
    code, out = invoke("db", "stop", data_dir=data_dir, port=port)
    assert code == 0 and "not running" in out
    code, out = invoke("db", "status", data_dir=data_dir, port=port)
    assert code == 3 and "stopped" in out

    code, out = invoke("db", "start", data_dir=data_dir, port=port)
    assert code == 0, out
    try:
        with psycopg.connect(cluster.url()) as conn:
            assert conn.execute("SELECT note FROM kept").fetchall() == [("still here",)]
    finally:
        cluster.stop()


def test_recovers_after_a_crash_and_from_a_stale_pid_file(cluster: LocalCluster) -> None:
    url = cluster.url().replace(cluster.password(), "wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url, connect_timeout=5)  # TCP needs the generated password

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t VALUES (42)")
    pid = cluster.running_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash: postmaster.pid and the socket lock stay behind
    deadline = time.monotonic() + 10
    while cluster.running_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (cluster.pgdata / "postmaster.pid").exists()
    assert cluster.start() is True
    with psycopg.connect(cluster.url()) as conn:
        assert conn.execute("SELECT n FROM t").fetchone() == (42,)

    # A pid file naming a live process that is not PostgreSQL (a recycled pid).
    cluster.stop()
    (cluster.pgdata / "postmaster.pid").write_text(
        f"{os.getpid()}\n{cluster.pgdata}\n0\n{cluster.port}\n"
    )
    assert cluster.status().running is False
    assert cluster.start() is True
    assert cluster.running_pid() not in (None, os.getpid())


def test_a_second_concurrent_start_is_refused_cleanly(
    data_dir: Path, cli_env: dict[str, str]
) -> None:
    port = free_port()
    env = dict(cli_env, LEDGER_DATA_DIR=str(data_dir), LEDGER_DB_PORT=str(port))
    data_dir.mkdir()
    first, second = (
        subprocess.Popen(
            ledger_command("db", "start"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    )
    results = [(p.wait(timeout=60), *p.communicate()) for p in (first, second)]
    try:
        for code, out, err in results:
            assert "Traceback" not in out + err
            if code != 0:
                assert code == 1
                assert err.startswith("Error: another ledger process") and err.count("\n") == 1
            else:
                assert "started" in out or "already running" in out
        assert sum(1 for code, out, _ in results if code == 0 and "started" in out) == 1
        assert LocalCluster(data_dir, port=port).running_pid() is not None
    finally:
        LocalCluster(data_dir, port=port).stop(wait_for_lock=30)


def test_a_start_while_another_process_holds_the_lock_is_refused(data_dir: Path) -> None:
    data_dir.mkdir()
    with open(data_dir / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("12345")
        held.flush()
        code, out = invoke("db", "start", data_dir=data_dir, port=free_port())
    assert code == 1
    assert out == (
        f"Error: another ledger process (pid 12345) is starting or stopping the database "
        f"in {data_dir}: wait for it to finish and try again\n"
    )


def test_port_taken(data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        code, out = invoke("db", "start", data_dir=data_dir, port=port)
    assert code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in out and "LEDGER_DB_PORT" in out
    assert not (data_dir / "pg").exists()  # refused before initdb
    assert "Traceback" not in out


def test_missing_server_programs_say_how_to_install(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pgserver, "_SEARCH_GLOBS", ())
    code, out = invoke("db", "start", data_dir=data_dir, port=free_port())
    assert code == 1
    assert "PostgreSQL server program 'initdb' not found" in out
    assert "apt-get install postgresql" in out
    assert out.count("\n") == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_root_moves_the_server_files_out_of_a_folder_the_server_user_cannot_reach(
    cli_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = cli_base / "fallback"
    monkeypatch.setattr(localdb, "SERVER_FALLBACK_ROOT", fallback)
    private = cli_base / "private"
    private.mkdir(mode=0o700)
    data_dir = private / "data"
    port = free_port()
    code, out = invoke("db", "start", data_dir=data_dir, port=port)
    try:
        assert code == 0, out
        assert f"cannot reach the data folder: {private} has mode 0700" in out
        cluster = LocalCluster(data_dir, port=port)
        assert cluster.server_dir.parent == fallback and cluster.pgdata.is_dir()
        with psycopg.connect(cluster.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        LocalCluster(data_dir, port=port).stop()

    # Nowhere to go: a clear error.
    monkeypatch.setattr(localdb, "SERVER_FALLBACK_ROOT", private / "elsewhere")
    code, out = invoke("db", "start", data_dir=cli_base / "private" / "other", port=port)
    assert code == 1 and out.count("\n") == 1
    assert f"cannot reach the data folder {private / 'other'} ({private} has mode 0700)" in out
    assert "LEDGER_DATA_DIR" in out


def test_stopped_embedded_database_is_a_clear_error(
    data_dir: Path, cli_env: dict[str, str]
) -> None:
    env = dict(cli_env, LEDGER_DATA_DIR=str(data_dir), LEDGER_DB_PORT=str(free_port()))
    result = run_ledger("balance", "alice", env=env)
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: the embedded database ({data_dir}) is not running: start it with "
        "`ledger db start`, or set LEDGER_DATABASE_URL to use another server\n"
    )


def test_deep_data_folders_get_a_short_socket_folder(cli_base: Path) -> None:
    deep = cli_base / ("d" * 60) / ("e" * 60)
    local = LocalCluster(deep, port=5999)
    assert len(str(local.socket_dir)) <= localdb._MAX_SOCKET_DIR
    assert LocalCluster(cli_base / "x", port=5999).socket_dir == cli_base / "x" / "run"
