"""The examples of examples/ (Node.js with `pg`, bash with psql) run as
separate processes against a migrated database, logged in as a member of
ledger_app as a service would be; their output and the database's state
afterwards are checked.

The Node.js example needs `node` and `npm`: when its node_modules folder is
missing or older than package-lock.json, `npm ci` installs it first. Without
node or npm the Node.js tests are skipped, except in CI (CI set), where they
fail: CI must run them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from ledger_cli.pgserver import PostgresBinariesMissing, find_program

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NODE_DIR = EXAMPLES / "node"

SERVICE_LOGIN = "ledger_example_svc"
SERVICE_PASSWORD = "example-password"  # for servers that ask for one (trust ignores it)

AMOUNT = 50
TOO_MUCH = 1_000_000

OUTPUT = re.compile(
    r"owner (?P<owner>example-(?:node|psql)-[0-9a-f-]+)\n"
    rf"posted entry (?P<entry_id>\d+): amount {AMOUNT}, balance {AMOUNT}, replayed false\n"
    rf"posted again with the same key: entry (?P=entry_id), balance {AMOUNT}, replayed true\n"
    rf"balance of (?P=owner): balance {AMOUNT}, held 0, available {AMOUNT}, updated at \S.*\n"
    rf"debit of {TOO_MUCH} refused: SQLSTATE LG001 \(insufficient_credits\),"
    rf" needed {TOO_MUCH}, available {AMOUNT}\n"
    r"all as expected\n"
)


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must provide it")
    pytest.skip(reason)


def _node_command() -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("the Node.js example needs node and npm (e.g. apt-get install nodejs npm)")
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        # npm ci installs exactly the committed lock file, and fails if it
        # disagrees with package.json.
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return [node, str(NODE_DIR / "ledger_example.js")]


def _psql_command() -> list[str]:
    try:
        find_program("psql")
    except PostgresBinariesMissing:
        unavailable("the psql example needs psql (apt-get install postgresql-client)")
    bash = shutil.which("bash")
    if bash is None:
        unavailable("the psql example needs bash")
    return [bash, str(EXAMPLES / "psql" / "ledger_example.sh")]


@pytest.fixture(scope="session")
def node_command() -> list[str]:
    return _node_command()


@pytest.fixture(scope="session")
def psql_command() -> list[str]:
    return _psql_command()


@pytest.fixture(params=["node", "psql"])
def example(request: pytest.FixtureRequest) -> list[str]:
    """The command line of one example."""
    command: list[str] = request.getfixturevalue(f"{request.param}_command")
    return command


def run_example(command: list[str], database_url: str | None) -> subprocess.CompletedProcess[str]:
    # The URL alone says where to connect: no PG* variable of the caller's.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    env.pop("LEDGER_DATABASE_URL", None)
    if database_url is not None:
        env["LEDGER_DATABASE_URL"] = database_url
    try:  # psql may sit beside the server programs only (/usr/lib/postgresql/*/bin)
        env["PATH"] = os.path.dirname(find_program("psql")) + os.pathsep + env.get("PATH", "")
    except PostgresBinariesMissing:
        pass
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)


def _as_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def service_url(conn: psycopg.Connection[Any], db_url: str) -> Iterator[str]:
    """A URL of the test's database for a login that is a member of ledger_app
    (roles are cluster-wide: made once, and kept a member of ledger_app only)."""
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_example_svc')"
        " THEN CREATE ROLE ledger_example_svc LOGIN; END IF; END $$"
    )
    conn.execute(f"ALTER ROLE {SERVICE_LOGIN} LOGIN NOSUPERUSER PASSWORD '{SERVICE_PASSWORD}'")
    conn.execute(f"GRANT ledger_app TO {SERVICE_LOGIN}")
    memberships = conn.execute(
        "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
        " JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = %s",
        (SERVICE_LOGIN,),
    ).fetchall()
    assert memberships == [("ledger_app",)]
    yield _as_login(db_url, SERVICE_LOGIN, SERVICE_PASSWORD)


def check_output(result: subprocess.CompletedProcess[str]) -> re.Match[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stderr == ""
    match = OUTPUT.fullmatch(result.stdout)
    assert match, result.stdout
    return match


def test_example_posts_replays_reads_and_is_refused(
    example: list[str], service_url: str, conn: psycopg.Connection[Any]
) -> None:
    runs = [check_output(run_example(example, service_url)) for _ in range(2)]
    owners = [match["owner"] for match in runs]
    assert owners[0] != owners[1]  # a new owner on every run

    for match in runs:
        owner, entry_id = match["owner"], int(match["entry_id"])
        # One entry: the replay wrote nothing and the refused debit nothing,
        # written by the service's login through ledger_app.
        assert conn.execute(
            "SELECT entry_id, app, operation, amount, balance, idempotency_key, created_by"
            " FROM ledger.entries WHERE owner_id = %s",
            (owner,),
        ).fetchall() == [
            (entry_id, "core", "CREDIT_ADD", AMOUNT, AMOUNT, f"{owner}-purchase-1", SERVICE_LOGIN)
        ]
        assert conn.execute(
            "SELECT balance, held, available FROM ledger.get_balance(%s)", (owner,)
        ).fetchone() == (AMOUNT, 0, AMOUNT)
        assert conn.execute(
            "SELECT count(*) FROM ledger.holds WHERE owner_id = %s", (owner,)
        ).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM ledger.verify()").fetchone() == (0,)


def test_example_fails_without_a_database_url(example: list[str]) -> None:
    result = run_example(example, None)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "FAILED: set LEDGER_DATABASE_URL" in result.stderr


def test_example_fails_on_a_database_without_the_ledger(
    example: list[str], blank_db_url: str
) -> None:
    result = run_example(example, blank_db_url)
    assert result.returncode == 1
    assert "all as expected" not in result.stdout
    assert "FAILED:" in result.stderr
    assert 'schema "ledger" does not exist' in result.stderr


def test_example_fails_for_a_login_outside_the_ledger(
    example: list[str], conn: psycopg.Connection[Any], db_url: str
) -> None:
    """A login that is not a member of ledger_app is refused (42501), and the
    example says so rather than reporting success."""
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_example_outsider')"
        " THEN CREATE ROLE ledger_example_outsider LOGIN; END IF; END $$"
    )
    conn.execute(f"ALTER ROLE ledger_example_outsider PASSWORD '{SERVICE_PASSWORD}'")
    result = run_example(example, _as_login(db_url, "ledger_example_outsider", SERVICE_PASSWORD))
    assert result.returncode == 1
    assert "all as expected" not in result.stdout
    assert "permission denied" in result.stderr
    assert conn.execute("SELECT count(*) FROM ledger.entries").fetchone() == (0,)


def test_the_readme_shows_the_output_the_examples_print() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    shown = re.findall(r"```text\n(.*?)```", readme, re.DOTALL)
    assert len(shown) == 1
    assert OUTPUT.fullmatch(shown[0]), shown[0]
