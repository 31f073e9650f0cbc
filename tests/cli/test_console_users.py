"""`ledger console add-user / list-users / remove-user`: console sign-ins
stored as scrypt hashes, never as passwords."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner, Result

from ledger_cli.cli import cli
from web.console.passwords import password_matches


@pytest.fixture
def ledger(db_url: str, cli_env: dict[str, str]):  # type: ignore[no-untyped-def]
    def invoke(*args: str, stdin: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env={"LEDGER_DATABASE_URL": db_url}, input=stdin)

    return invoke


def test_add_list_and_remove_console_users(ledger, db_url: str) -> None:  # type: ignore[no-untyped-def]
    added = ledger(
        "console",
        "add-user",
        "olga",
        "--role",
        "operator",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert added.exit_code == 0, added.output
    assert added.output == "console user olga: operator\n"
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT password_hash FROM ledger.console_users WHERE name = 'olga'"
        ).fetchone()
    assert row is not None and row[0].startswith("scrypt:")
    assert "a long enough password" not in row[0]
    assert password_matches(row[0], "a long enough password")
    # Again: a new role and password.
    again = ledger(
        "console",
        "add-user",
        "olga",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="another long password\n",
    )
    assert again.exit_code == 0, again.output
    users = json.loads(ledger("console", "list-users", "--json").output)
    assert [(u["name"], u["role"]) for u in users] == [("olga", "viewer")]
    assert "password_hash" not in users[0]

    short = ledger(
        "console", "add-user", "vic", "--role", "viewer", "--password-stdin", stdin="short\n"
    )
    assert short.exit_code == 2 and "at least 12 characters" in short.output
    wrong_role = ledger(
        "console", "add-user", "vic", "--role", "admin", "--password-stdin", stdin="x" * 20
    )
    assert wrong_role.exit_code == 2
    bad_name = ledger(
        "console",
        "add-user",
        "bad name",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert bad_name.exit_code == 1 and bad_name.output.startswith("Error: ")

    assert ledger("console", "remove-user", "olga").output == "removed console user olga\n"
    missing = ledger("console", "remove-user", "olga")
    assert missing.exit_code == 1 and missing.output == "Error: no console user olga\n"


def test_verify_record_keeps_the_run_for_the_console(ledger) -> None:  # type: ignore[no-untyped-def]
    recorded = ledger("verify", "--record")
    assert recorded.exit_code == 0, recorded.output
    assert (
        recorded.output.startswith("recorded verify run ") and "no discrepancy" in recorded.output
    )
    runs = json.loads(ledger("verify", "--record", "--json").output)
    assert runs["findings"] == 0 and runs["sample"] == []
