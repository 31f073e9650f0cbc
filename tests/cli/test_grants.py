"""`ledger grants list|grant|void|expire` against a migrated database
(LEDGER_DATABASE_URL), and `expire --loop` as a separate process stopped by
a signal."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner, Result

from ledger_cli.cli import cli
from ledger_py import Ledger

from .helpers import REPO, ledger_command

Invoke = Callable[..., Result]


@pytest.fixture
def ledger(db_url: str, cli_env: dict[str, str]) -> Invoke:
    """Invoke `ledger ARGS` in-process against a fresh migrated database."""

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={"LEDGER_DATABASE_URL": db_url})

    return invoke


def rfc3339(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def soon(seconds: float = 1.0) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def wait_until_past(instant: datetime) -> None:
    time.sleep(max(0.0, (instant - datetime.now(timezone.utc)).total_seconds()) + 0.05)


def grants_json(ledger: Invoke, owner: str) -> list[dict[str, object]]:
    result = ledger("grants", "list", owner, "--all", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_help_lists_the_grants_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert re.search(r"^\s+grants\b", result.output, re.MULTILINE)
    result = CliRunner().invoke(cli, ["grants", "--help"])
    assert all(word in result.output for word in ("list", "grant", "void", "expire"))


def test_grant_list_void_and_replay(ledger: Invoke) -> None:
    expires_at = (datetime.now(timezone.utc) + timedelta(days=3)).replace(microsecond=0)
    grant_args = (
        *("grants", "grant", "alice", "--app", "core", "--operation", "PROMO_CREDIT"),
        *("--key", "promo-1", "--amount", "40", "--priority", "5"),
        *("--expires-at", rfc3339(expires_at)),
    )
    made = ledger(*grant_args)
    assert made.exit_code == 0, made.output
    assert re.fullmatch(r"entry \d+: \+40 core/PROMO_CREDIT for alice, balance 40\n", made.output)
    again = ledger(*grant_args)
    assert again.exit_code == 0 and "replay: nothing written" in again.output

    listed = ledger("grants", "list", "alice")
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split()[:4] == ["GRANT", "ENTRY", "APP/OPERATION", "AMOUNT"]
    stamp = expires_at.strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"core/PROMO_CREDIT\s+40\s+40\s+5\s+{stamp}\s+active$", row), row
    [shown] = grants_json(ledger, "alice")
    assert datetime.fromisoformat(str(shown["expires_at"])) == expires_at
    assert (shown["amount"], shown["remaining"], shown["priority"]) == (40, 40, 5)
    grant_id = str(shown["grant_id"])

    void_args = ("grants", "void", grant_id, "--app", "core", "--key", "void-1")
    voided = ledger(*void_args, "--reason", "sent twice", "--owner", "alice")
    assert voided.exit_code == 0, voided.output
    assert re.fullmatch(
        rf"grant {grant_id} voided: entry \d+ -40 for alice, balance 0\n", voided.output
    )
    replay = ledger(*void_args, "--reason", "sent twice", "--owner", "alice")
    assert replay.exit_code == 0 and "replay: nothing written" in replay.output

    assert ledger("grants", "list", "alice").output == "no active grants for alice\n"
    closed = ledger("grants", "list", "alice", "--all")
    assert re.search(r"core/PROMO_CREDIT\s+40\s+0\s+5\s+\S+ \S+\s+voided$", closed.output)
    assert [g["status"] for g in grants_json(ledger, "alice")] == ["voided"]

    twice = ledger("grants", "void", grant_id, "--app", "core", "--key", "void-2")
    assert twice.exit_code == 1
    assert twice.output.startswith("Error: grant_not_active: ")
    assert ledger("balance", "alice").output.startswith("alice: balance 0,")


def test_bad_grants_are_refused_and_name_the_option(ledger: Invoke) -> None:
    base = ("grants", "grant", "bob", "--app", "core", "--operation", "PROMO_CREDIT", "--key", "k")
    no_offset = ledger(*base, "--amount", "5", "--expires-at", "2030-01-01T00:00:00")
    assert no_offset.exit_code == 2 and "has no offset" in no_offset.output
    not_a_time = ledger(*base, "--amount", "5", "--expires-at", "tomorrow")
    assert not_a_time.exit_code == 2 and "--expires-at" in not_a_time.output
    too_late = ledger(*base, "--amount", "5", "--expires-at", rfc3339(soon(31 * 86400)))
    assert too_late.exit_code == 2, too_late.output
    assert "--expires-at" in too_late.output and "invalid_argument" in too_late.output
    priority = ledger(*base, "--amount", "5", "--priority", "5000")
    assert priority.exit_code == 2 and "--priority" in priority.output
    missing = ledger("grants", "grant", "bob", "--app", "core", "--operation", "PROMO_CREDIT")
    assert missing.exit_code == 2 and "--key" in missing.output
    assert ledger("grants", "void", "0", "--app", "core", "--key", "v").exit_code == 2
    unknown = ledger("grants", "void", "987654", "--app", "core", "--key", "v")
    assert unknown.exit_code == 1 and unknown.output.startswith("Error: not_found: ")
    assert ledger("grants", "expire", "--loop", "0").exit_code == 2
    assert ledger("grants", "expire", "--max-rows", "0").exit_code == 2
    assert grants_json(ledger, "bob") == []


def test_void_of_another_apps_grant_is_refused(ledger: Invoke, db_url: str) -> None:
    with Ledger(db_url) as direct:
        direct.define_app(app="shop")
    made = ledger(
        *("grants", "grant", "cid", "--app", "core", "--operation", "CREDIT_ADD"),
        *("--key", "g", "--amount", "3"),
    )
    assert made.exit_code == 0, made.output
    [shown] = grants_json(ledger, "cid")
    refused = ledger("grants", "void", str(shown["grant_id"]), "--app", "shop", "--key", "v")
    assert refused.exit_code == 1 and refused.output.startswith("Error: operation_not_allowed: ")


def test_expire_once_writes_off_what_has_expired(ledger: Invoke) -> None:
    expires_at = soon()
    made = ledger(
        *("grants", "grant", "dot", "--app", "core", "--operation", "CREDIT_ADD", "--key", "g"),
        *("--amount", "6", "--expires-at", rfc3339(expires_at)),
    )
    assert made.exit_code == 0, made.output
    wait_until_past(expires_at)
    assert ledger("grants", "list", "dot").output == "no active grants for dot\n"
    first = ledger("grants", "expire")
    assert (first.exit_code, first.output) == (0, "expired 1 grant\n")
    second = ledger("grants", "expire", "--max-rows", "5")
    assert (second.exit_code, second.output) == (0, "expired 0 grants\n")
    assert [g["status"] for g in grants_json(ledger, "dot")] == ["expired"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_expire_loop_runs_until_a_signal_then_exits_cleanly(
    db_url: str, cli_env: dict[str, str], signum: int
) -> None:
    expires_at = soon(1.0)
    with Ledger(db_url) as direct:
        direct.grant_credits(
            owner_id="eli",
            app="core",
            operation="CREDIT_ADD",
            idempotency_key="g",
            amount=5,
            expires_at=expires_at,
        )
    env = {**cli_env, "LEDGER_DATABASE_URL": db_url, "PYTHONUNBUFFERED": "1"}
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    with subprocess.Popen(
        ledger_command("grants", "expire", "--loop", "0.2"),
        env=env,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while not any(line.endswith("expired 1 grant\n") for line in seen):
                assert time.monotonic() < deadline, seen
                assert process.poll() is None, seen
                try:
                    seen.append(lines.get(timeout=0.5))
                except queue.Empty:
                    pass
            process.send_signal(signum)
            process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.join(timeout=5)
        assert process.stderr is not None
        stderr = process.stderr.read()
    while not lines.empty():
        seen.append(lines.get())
    assert process.returncode == 0, (seen, stderr)
    assert seen[0].startswith("expiring grants every 0.2 s")
    assert seen[-1] == "stopped\n"
    rounds = [line for line in seen if " expired " in line]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  expired \d+ grants?\n", r) for r in rounds
    )
    assert sum(int(r.split()[3]) for r in rounds) == 1
    assert "Traceback" not in stderr and "Aborted" not in stderr
    with Ledger(db_url) as direct:
        [expired] = direct.list_grants(owner_id="eli", include_closed=True)
        assert expired.status == "expired"
