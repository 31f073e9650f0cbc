"""Test harness: one throwaway PostgreSQL per session, one migrated template
database, a fresh database cloned from it for every test.

Set LEDGER_TEST_DATABASE_URL (a superuser URL of an outside server, e.g. the
docker-compose test database on port 5433) to use that server instead.

Citus: `citus_cluster` starts a local Citus cluster (a coordinator and two
workers, tests/citus/cluster.py) once per session, on first use;
`citus_template_url` migrates a database on it (migrate distributes it).
The tests of the modules in CITUS_CONTRACT (the SQL contract: every
function, replays and conflicts, holds, transfers, batches, reversals, the
concurrency tests; the example app's flow; the HTTP grant endpoints) run
twice: `[plain]` on the throwaway server, `[citus]` with `db_url` a fresh
copy of that distributed database. Same code, same assertions. A test there that cannot mean the same
on Citus is marked `@pytest.mark.plain_only("reason")` and runs on plain
PostgreSQL only. Where Citus is not installed the `[citus]` variants are
skipped with the reason; in CI (`CI` set) that is a failure instead.
LEDGER_TEST_CITUS_URL (a superuser URL of an outside coordinator whose
workers are registered) uses that cluster instead.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import settings
from psycopg import sql

from ledger_cli.pgserver import throwaway_server
from ledger_py.migrate import migrate

from .citus import cluster as citus

# Under pytest-xdist every worker has its own templates (an outside server is
# shared by the workers).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
TEMPLATE = "ledger_template" + (f"_{_WORKER}" if _WORKER else "")
CITUS_TEMPLATE = "ledger_citus_template" + (f"_{_WORKER}" if _WORKER else "")

# CI runs every property test with a fixed seed, so a red run is reproducible.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
_counter = itertools.count()

# Paths relative to tests/.
CITUS_CONTRACT = {
    "sql/test_entries.py",
    "sql/test_holds.py",
    "sql/test_transfers.py",
    "sql/test_batches.py",
    "sql/test_reversals.py",
    "sql/test_concurrency.py",
    "sql/test_definitions.py",
    "sql/test_reports.py",
    "sql/test_grants.py",
    "sql/test_events.py",
    "sql/test_webhooks.py",
    "sql/test_webhook_fan_out.py",
    "sql/test_operators.py",
    "sql/test_metrics_snapshot.py",
    "reliability/test_webhooks.py",
    "web/test_example_app.py",
    "web/test_grants_api.py",
}
_TESTS = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run long variants (marked slow)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    module = Path(str(metafunc.definition.path)).resolve()
    if module.relative_to(_TESTS).as_posix() not in CITUS_CONTRACT:
        return
    if metafunc.definition.get_closest_marker("plain_only") is not None:
        return
    metafunc.parametrize("backend", ["plain", "citus"], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A superuser URL (database postgres) of the server the suite uses."""
    outside = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if outside:
        yield _with_database(outside, "postgres")
        return
    server = throwaway_server()
    try:
        yield server.url(database="postgres")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = _with_database(server_url, TEMPLATE)
    migrate(url)
    return url


# How a test's database is copied from the template. On the suite's own
# servers (fsync off) copying the files is faster than PostgreSQL 15's
# default, WAL_LOG, which writes the copy through the WAL (about 90 against
# 150 ms a database, a minute or more over the suite); its checkpoint costs
# little without fsync. An outside server keeps its default.
CLONE_STRATEGY = sql.SQL(
    "" if os.environ.get("LEDGER_TEST_DATABASE_URL") else " STRATEGY FILE_COPY"
)


def new_database(server_url: str, template: str = TEMPLATE) -> str:
    name = f"ledger_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
                sql.Identifier(name), sql.Identifier(template), CLONE_STRATEGY
            )
        )
    return _with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[str]:
    """The coordinator's superuser URL (database postgres) of a running Citus cluster."""
    outside = os.environ.get("LEDGER_TEST_CITUS_URL")
    if outside:
        yield _with_database(outside, "postgres")
        _finish_drops()
        return
    try:
        citus.require_citus()
    except citus.CitusUnavailable as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (CI must install it before the suite)")
        pytest.skip(str(missing))
    # 4 shards a table instead of Citus's 32: the tests still put owners on
    # both workers, and each test's copy of the database (CITUS_TEMPLATE on
    # every node) is about a third faster to make.
    running = citus.start_cluster(settings={"citus.shard_count": "4"})
    print(f"\nCitus cluster started in {running.started_in:.1f} s", file=sys.stderr)
    try:
        yield running.url()
    finally:
        _finish_drops()
        running.stop()


# Dropping a database on three nodes takes 0.4 s or more (Citus's maintenance
# daemon of the database may hold it a moment): a test's database is dropped
# while the next test runs, one drop at a time.
_pending_drop: list[threading.Thread] = []


def _drop_in_background(coordinator: str, name: str) -> None:
    _finish_drops()
    thread = threading.Thread(target=citus.drop_database, args=(coordinator, name))
    thread.start()
    _pending_drop.append(thread)


def _finish_drops() -> None:
    while _pending_drop:
        _pending_drop.pop().join()


@pytest.fixture(scope="session")
def citus_template_url(citus_cluster: str) -> str:
    """A database on the cluster, migrated (hence distributed), frozen as a template."""
    citus.drop_database(citus_cluster, CITUS_TEMPLATE)
    url = citus.create_database(citus_cluster, CITUS_TEMPLATE)
    migrate(url)
    citus.freeze_template(citus_cluster, CITUS_TEMPLATE)
    return url


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Where db_url lives: "plain" (the throwaway server) unless parametrized "citus"."""
    return str(getattr(request, "param", "plain"))


@pytest.fixture
def db_url(request: pytest.FixtureRequest, backend: str) -> Iterator[str]:
    """A fresh, migrated database for one test (superuser connection URL)."""
    if backend == "citus":
        request.getfixturevalue("citus_template_url")
        coordinator = request.getfixturevalue("citus_cluster")
        name = f"ledger_test_{os.getpid()}_{next(_counter)}"
        url = citus.clone_database(coordinator, CITUS_TEMPLATE, name)
        try:
            yield url
        finally:
            _drop_in_background(coordinator, name)
        return
    server_url = request.getfixturevalue("server_url")
    request.getfixturevalue("template_url")
    url = new_database(server_url)
    try:
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture
def blank_db_url(server_url: str) -> Iterator[str]:
    """A fresh database with nothing migrated."""
    url = new_database(server_url, template="template0")
    try:
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection
