"""Helpers of the `ledger` command's tests."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_ledger(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`ledger ARGS` as a separate process (python -m ledger_cli runs the console script's code)."""
    return subprocess.run(
        [sys.executable, "-m", "ledger_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
    )


def ledger_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ledger_cli", *args]
