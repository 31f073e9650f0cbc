"""The SQL contract on the Citus cluster too.

The tests of the modules in CITUS_CONTRACT (every function, replays and
conflicts, holds, transfers, batches, reversals, the concurrency tests) run
twice: `[plain]` on the throwaway PostgreSQL server, `[citus]` on a fresh copy
of a migrated, distributed database of the local 3-node Citus cluster
(tests/conftest.py). The same test code, the same assertions.

A test of those modules that cannot mean the same on Citus is marked
`@pytest.mark.plain_only("reason")` and runs once, on plain PostgreSQL.
Where Citus is not installed the `[citus]` variants are skipped with the
reason (in CI, where it is installed, that is a failure).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CITUS_CONTRACT = {
    "test_entries.py",
    "test_holds.py",
    "test_transfers.py",
    "test_batches.py",
    "test_reversals.py",
    "test_concurrency.py",
    "test_definitions.py",
    "test_reports.py",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    if Path(str(metafunc.definition.fspath)).name not in CITUS_CONTRACT:
        return
    if metafunc.definition.get_closest_marker("plain_only") is not None:
        return
    metafunc.parametrize("backend", ["plain", "citus"], indirect=True)
