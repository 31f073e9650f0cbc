"""Fixtures of the `ledger` command's tests.

Embedded clusters live under a base folder in /tmp with mode 0755: as root
the server runs as an unprivileged user that must reach the data folder
(pytest's tmp_path sits under a 0700 folder then). Every cluster gets a free
port of its own, so the suite can run beside other PostgreSQL servers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger_cli.localdb import LocalCluster

from .helpers import free_port


@pytest.fixture(scope="session")
def cli_base() -> Iterator[Path]:
    """A folder the server user can reach; clusters left running in it are stopped at the end."""
    base = Path(tempfile.mkdtemp(prefix="ledger-cli-tests-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for pg in base.glob("*/pg"):
            try:
                LocalCluster(pg.parent, port=1).stop(wait_for_lock=10)
            except Exception:  # pragma: no cover - best effort clean-up
                pass
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def data_dir(cli_base: Path, request: pytest.FixtureRequest) -> Path:
    """A not yet existing data folder for one test's embedded cluster."""
    name = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:60]
    folder = cli_base / name
    assert not folder.exists()
    return folder


@pytest.fixture
def cluster(data_dir: Path) -> Iterator[LocalCluster]:
    """A started embedded cluster (stopped after the test)."""
    local = LocalCluster(data_dir, port=free_port())
    local.start()
    try:
        yield local
    finally:
        local.stop(wait_for_lock=30)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment: no LEDGER_* variable from the caller leaks into a test."""
    for name in list(os.environ):
        if name.startswith("LEDGER_") and name not in (
            "LEDGER_PG_USER",
            "LEDGER_TEST_DATABASE_URL",
        ):
            monkeypatch.delenv(name)
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEDGER_") or k in ("LEDGER_PG_USER",)
    }
