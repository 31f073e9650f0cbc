"""A private PostgreSQL that a test may SIGKILL and start again on the same data.

testing.postgresql's stop() deletes the data folder, so a crash test never
calls it until the very end: it kills the postmaster, waits until no process
of the old server is left (every backend runs with the data folder as its
working directory, which is how they are found), then starts the same object
again, which recovers from the WAL like a real crash restart.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

from ledger_cli.pgserver import throwaway_server


def durable_server(settings: dict[str, str] | None = None) -> Any:
    """fsync and synchronous_commit on: a commit that returned is in the WAL on disk."""
    merged = {"synchronous_commit": "on", "full_page_writes": "on", **(settings or {})}
    server = throwaway_server(fsync=True, settings=merged)
    server.settings["boot_timeout"] = 120  # crash recovery on a busy machine
    return server


def server_processes(data_dir: str) -> list[int]:
    """Pids of every process whose working directory is the data folder (postmaster, backends)."""
    real = os.path.realpath(data_dir)
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.path.realpath(os.readlink(f"/proc/{name}/cwd")) == real:
                found.append(int(name))
        except OSError:
            continue  # gone, or not ours to read
    return found


def port_accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def kill_postmaster(
    server: Any, every_process: bool = False, timeout: float = 60.0
) -> dict[str, Any]:
    """SIGKILL the postmaster (with every_process, then each of its backends at
    once); wait until the old backends have exited and the port is free.

    Returns what was seen: how many server processes were alive at the kill
    and how long they took to disappear.
    """
    data_dir = server.get_data_directory()
    before = server_processes(data_dir)
    started = time.monotonic()
    os.kill(server.server_pid, signal.SIGKILL)  # first: no new backend can be forked
    if every_process:
        for pid in before:
            if pid != server.server_pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    server.child_process.wait(timeout=timeout)  # reap the postmaster
    server.child_process = None  # testing.common.database: "not started"
    deadline = started + timeout
    while server_processes(data_dir) or port_accepts(server.settings["port"]):
        if time.monotonic() > deadline:
            raise AssertionError(f"old server processes still alive: {server_processes(data_dir)}")
        time.sleep(0.05)
    return {"processes_at_kill": len(before), "drain_seconds": time.monotonic() - started}


def restart(server: Any) -> float:
    """Start the server again on the same data (crash recovery); seconds it took."""
    started = time.monotonic()
    server.start()
    return time.monotonic() - started
