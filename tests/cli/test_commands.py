"""The `ledger` commands against a migrated database (LEDGER_DATABASE_URL), and their failures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner, Result

from ledger_cli import cli as cli_module
from ledger_cli.cli import cli

from .helpers import free_port, run_ledger


@pytest.fixture
def ledger(db_url: str, cli_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Invoke `ledger ARGS` in-process against a fresh migrated database."""

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={"LEDGER_DATABASE_URL": db_url})

    return invoke


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("db", "migrate", "serve", "keys", "balance", "post", "history", "verify"):
        assert re.search(rf"^\s+{name}\b", result.output, re.MULTILINE), name
    result = CliRunner().invoke(cli, ["db", "--help"])
    assert all(word in result.output for word in ("start", "stop", "status"))


def test_the_console_script(cli_env: dict[str, str]) -> None:
    script = Path(sys.executable).with_name("ledger")
    if not script.exists():
        pytest.skip("the package is not installed in this environment (pip install -e .)")
    result = subprocess.run([str(script), "--version"], env=cli_env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("ledger, version ")


def test_post_balance_history_and_replay(ledger) -> None:  # type: ignore[no-untyped-def]
    result = ledger(
        "post",
        "alice",
        "CREDIT_ADD",
        "--amount",
        "25",
        "--key",
        "buy-1",
        "--metadata",
        '{"order": 7}',
    )
    assert result.exit_code == 0, result.output
    assert re.match(r"entry \d+: \+25 core/CREDIT_ADD for alice, balance 25\n", result.output)

    again = ledger(
        "post",
        "alice",
        "CREDIT_ADD",
        "--amount",
        "25",
        "--key",
        "buy-1",
        "--metadata",
        '{"order": 7}',
    )
    assert again.exit_code == 0 and "replay: nothing written" in again.output

    spent = ledger("post", "alice", "CREDIT_SPEND", "--amount", "5")
    assert spent.exit_code == 0 and "-5 core/CREDIT_SPEND" in spent.output
    assert "idempotency key: cli-" in spent.output  # printed (stderr) so a retry can reuse it

    result = ledger("balance", "alice")
    assert result.output == "alice: balance 20, held 0, available 20\n"
    as_json = json.loads(ledger("balance", "alice", "--json").output)
    assert as_json["balance"] == 20 and as_json["owner_id"] == "alice"

    history = ledger("history", "alice")
    assert history.exit_code == 0
    lines = history.output.splitlines()
    assert "CREDIT_SPEND" in lines[1] and "CREDIT_ADD" in lines[2] and len(lines) == 3
    rows = json.loads(ledger("history", "alice", "--json", "--limit", "1").output)
    assert [row["operation"] for row in rows] == ["CREDIT_SPEND"]
    everything = json.loads(ledger("history", "alice", "--json").output)
    assert everything[-1]["metadata"] == {"order": 7}
    paged = ledger("history", "alice", "--limit", "1")
    assert f"--before {rows[0]['entry_id']}" in paged.output
    assert ledger("history", "nobody").output == "no entries for nobody\n"


def test_ledger_errors_are_one_line(ledger) -> None:  # type: ignore[no-untyped-def]
    broke = ledger("post", "bob", "CREDIT_SPEND", "--amount", "3")
    assert broke.exit_code == 1
    assert broke.output.startswith("Error: insufficient_credits: ")
    assert broke.output.count("\n") <= 2  # the error line (+ the printed idempotency key)

    unknown = ledger("post", "bob", "NO_SUCH_OPERATION")
    assert unknown.exit_code == 1 and "Error: unknown_operation: " in unknown.output

    not_object = ledger("post", "bob", "CREDIT_ADD", "--metadata", "[1, 2]")
    assert not_object.exit_code == 1 and "Error: invalid_argument: " in not_object.output
    bad_json = ledger("post", "bob", "CREDIT_ADD", "--metadata", "{oops")
    assert (
        bad_json.exit_code == 2
        and "Invalid value for --metadata: not valid JSON" in bad_json.output
    )

    usage = ledger("post", "bob", "CREDIT_ADD", "--amount", "lots")
    assert usage.exit_code == 2 and "'lots' is not a valid integer" in usage.output


def test_integers_take_ascii_digits_and_errors_name_the_option(ledger) -> None:  # type: ignore[no-untyped-def]
    """int() reads full-width digits ("\uff10\uff15" is 5): the command refuses
    them, and an error about a value an option gave names that option."""
    wide = ledger("post", "carol", "CREDIT_ADD", "--amount", "\uff10\uff15")
    assert wide.exit_code == 2 and "Invalid value for '--amount'" in wide.output
    assert "ASCII digits" in wide.output
    assert ledger("balance", "carol").output == "carol: balance 0, held 0, available 0\n"
    for spelled in ("1_0", " 10", "\u0661"):
        refused = ledger("post", "carol", "CREDIT_ADD", "--amount", spelled)
        assert refused.exit_code == 2, (spelled, refused.output)
    assert ledger("history", "carol", "--before", "\uff11").exit_code == 2

    beyond = ledger("history", "carol", "--before", str(2**63))
    assert beyond.exit_code == 2, beyond.output
    assert "Invalid value for --before: out of range" in beyond.output
    assert "after_id" not in beyond.output

    # The database judges --limit (list_entries' max_rows): its error names the option.
    for limit in ("0", "1001", str(2**40)):
        refused = ledger("history", "carol", "--limit", limit)
        assert refused.exit_code == 2, refused.output
        assert "Invalid value for --limit: out of range" in refused.output, refused.output
        assert "max_rows" not in refused.output
    assert "(min 1, max 1000)" in ledger("history", "carol", "--limit", "1001").output


def test_keys_create_list_revoke(ledger) -> None:  # type: ignore[no-untyped-def]
    created = ledger("keys", "create", "example_app", "--label", "content service")
    assert created.exit_code == 0, created.output
    key_id = re.search(r"key_id: (\S+)", created.output)
    token = re.search(r"token:  (\S+)", created.output)
    assert key_id and token

    listed = ledger("keys", "list")
    assert key_id[1] in listed.output and "example_app" in listed.output
    assert listed.output.splitlines()[1].endswith("content service")
    assert token[1] not in listed.output
    keys = json.loads(ledger("keys", "list", "--json").output)
    assert [(k["key_id"], k["revoked_at"]) for k in keys] == [(key_id[1], None)]

    assert ledger("keys", "revoke", key_id[1]).output == f"revoked {key_id[1]}\n"
    again = ledger("keys", "revoke", key_id[1])
    assert again.exit_code == 1
    assert again.output == f"Error: no active API key '{key_id[1]}' (unknown or already revoked)\n"

    unknown_app = ledger("keys", "create", "no_such_app")
    assert unknown_app.exit_code == 1 and unknown_app.output.startswith("Error: unknown_app: ")


def test_keys_create_with_the_audit_scope(ledger) -> None:  # type: ignore[no-untyped-def]
    audit = ledger("keys", "create", "core", "--scope", "audit", "--label", "auditor")
    assert audit.exit_code == 0, audit.output
    plain = ledger("keys", "create", "core")
    assert plain.exit_code == 0, plain.output
    scopes = [k["scope"] for k in json.loads(ledger("keys", "list", "--json").output)]
    assert sorted(scopes) == ["app", "audit"]
    assert " audit " in ledger("keys", "list").output
    wrong = ledger("keys", "create", "core", "--scope", "admin")
    assert wrong.exit_code == 2 and "'admin' is not one of 'app', 'audit'" in wrong.output


def test_verify_healthy_with_and_without_progress_bar(
    ledger, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    ledger("post", "carol", "SIGNUP_CREDIT")
    result = ledger("verify")
    assert result.exit_code == 0 and result.output == "ledger verified: no discrepancy\n"
    assert json.loads(ledger("verify", "--json").output) == []
    # A large ledger shows a progress bar while the check runs.
    monkeypatch.setattr(cli_module, "VERIFY_PROGRESS_THRESHOLD", 0)
    result = ledger("verify")
    assert result.exit_code == 0
    assert "verifying ~" in result.output and "no discrepancy" in result.output


def test_verify_reports_discrepancies(ledger, db_url: str) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    ledger("post", "dave", "CREDIT_ADD", "--amount", "10")
    with psycopg.connect(db_url, autocommit=True) as conn:  # a superuser can corrupt anything
        conn.execute("UPDATE ledger.accounts SET balance = 11 WHERE owner_id = 'dave'")
    result = ledger("verify")
    assert result.exit_code == 1
    assert "balance_matches_entries: dave: stored balance 11" in result.output


def test_migrate_a_given_url_as_a_subprocess(db_url: str, cli_env: dict[str, str]) -> None:
    result = run_ledger("migrate", db_url, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("nothing to do (up to date)\n")
    assert "Traceback" not in result.stderr


def test_unreachable_database_names_host_and_port_and_hides_the_password(
    cli_env: dict[str, str],
) -> None:
    port = free_port()
    url = f"postgresql://someone:s3cret-pw@127.0.0.1:{port}/ledger"
    for args in (["migrate"], ["balance", "alice"], ["keys", "list"], ["verify"]):
        result = run_ledger(*args, env=dict(cli_env, LEDGER_DATABASE_URL=url))
        assert result.returncode == 1, (args, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith(f"Error: cannot reach the database at 127.0.0.1:{port}: ")
        assert result.stderr.count("\n") == 1, result.stderr
        assert "s3cret-pw" not in result.stderr and "Traceback" not in result.stderr


def test_wrong_password_is_masked(db_url: str, cli_env: dict[str, str]) -> None:
    parts = urlsplit(db_url)
    host = f"{parts.hostname}:{parts.port}"
    url = urlunsplit(parts._replace(netloc=f"nobody-here:Hunter2-secret@{host}"))
    result = CliRunner().invoke(cli, ["balance", "x"], env={"LEDGER_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "Hunter2-secret" not in result.output
    assert result.output.startswith("Error: cannot reach the database at ")


def test_bad_configuration_is_a_usage_error(cli_env: dict[str, str]) -> None:
    result = run_ledger("serve", env=dict(cli_env, LEDGER_PORT="eighty"))
    assert result.returncode == 2
    assert "'eighty' is not a valid integer" in result.stderr and "Traceback" not in result.stderr
    result = run_ledger("--log-level", "loud", "verify", env=cli_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
