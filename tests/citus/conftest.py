"""The `citus_cluster` fixture: a local Citus cluster (a coordinator and two
workers, see cluster.py) for the whole session, started on first use.

Where Citus is not installed the tests that use it are skipped with the reason
and how to get it; in CI (`CI` set) that is a failure instead: CI installs
Citus before the suite runs. LEDGER_TEST_CITUS_URL (a superuser URL of an
outside coordinator whose workers are registered) uses that cluster instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from . import cluster as citus


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[str]:
    """The coordinator's superuser URL (database postgres) of a running cluster."""
    outside = os.environ.get("LEDGER_TEST_CITUS_URL")
    if outside:
        yield outside
        return
    try:
        citus.require_citus()
    except citus.CitusUnavailable as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (CI must install it before the suite)")
        pytest.skip(str(missing))
    running = citus.start_cluster()
    print(f"\nCitus cluster started in {running.started_in:.1f} s", file=sys.stderr)
    try:
        yield running.url()
    finally:
        running.stop()
