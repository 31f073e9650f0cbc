"""`ledger webhooks add|list|disable|enable|remove|log|resend|run` and `ledger events
prune` against a migrated database (LEDGER_DATABASE_URL), in-process through
click's runner; `run` as a separate process where a signal stops it. The
dispatcher's behaviour against receivers is tested in
tests/reliability/test_webhooks.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from ledger_cli.cli import cli
from ledger_cli.dispatcher import DispatcherConfig, retry_delay, signed_headers

from .helpers import REPO, ledger_command

Invoke = Callable[..., Result]


@pytest.fixture
def ledger(db_url: str, cli_env: dict[str, str]) -> Invoke:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={"LEDGER_DATABASE_URL": db_url})

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def added(ledger: Invoke, *args: str) -> dict[str, Any]:
    return json.loads(ok(ledger("webhooks", "add", *args, "--json")))  # type: ignore[no-any-return]


def test_add_shows_the_secret_once_and_list_never(ledger: Invoke) -> None:
    result = ledger("webhooks", "add", "core", "https://example.com/hook", "--event", "hold.created",
                    "--event", "entry.posted", "--description", "orders")
    out = ok(result)
    secret = re.search(r"^secret:\s+(whsec_\S+)$", out, re.MULTILINE)
    assert secret, out
    assert "not shown again" in result.stderr
    assert "[entry.posted,hold.created]" in out and "(orders)" in out
    other = added(ledger, "example_app", "http://127.0.0.1:9/x")
    assert other["secret"].startswith("whsec_") and other["event_types"] is None
    listing = ok(ledger("webhooks", "list"))
    assert "whsec_" not in listing
    assert "every event type" in listing and "example_app" in listing
    only = json.loads(ok(ledger("webhooks", "list", "--app", "example_app", "--json")))
    assert [e["endpoint_id"] for e in only] == [other["endpoint_id"]]
    assert all("secret" not in e for e in only)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("core", "ftp://example.com"), "URL"),
        (("core", "https://example.com", "--event", "entry.psoted"), "--event"),
        (("nobody", "https://example.com"), "unknown app"),
    ],
)
def test_add_refuses_bad_input_in_one_line(ledger: Invoke, args: tuple[str, ...], complaint: str) -> None:
    result = ledger("webhooks", "add", *args)
    assert result.exit_code in (1, 2), result.output
    assert complaint in result.output
    assert "Traceback" not in result.output
    assert "no webhook endpoints yet" in ok(ledger("webhooks", "list"))


def test_disable_enable_remove_find_the_endpoints_app(ledger: Invoke) -> None:
    endpoint_id = str(added(ledger, "example_app", "https://example.com/a")["endpoint_id"])
    assert ok(ledger("webhooks", "disable", endpoint_id)) == f"endpoint {endpoint_id} disabled\n"
    assert "disabled since" in ok(ledger("webhooks", "list"))
    assert ok(ledger("webhooks", "enable", endpoint_id)) == f"endpoint {endpoint_id} enabled\n"
    wrong = ledger("webhooks", "remove", endpoint_id, "--app", "core")
    assert wrong.exit_code == 1 and "not_found" in wrong.output
    assert "removed endpoint" in ok(ledger("webhooks", "remove", endpoint_id))
    gone = ledger("webhooks", "remove", endpoint_id)
    assert gone.exit_code == 1 and "not_found" in gone.output


def test_log_and_resend(ledger: Invoke, db_url: str) -> None:
    endpoint_id = added(ledger, "core", "https://example.com/a")["endpoint_id"]
    ok(ledger("post", "alice", "CREDIT_ADD", "--amount", "5", "--key", "k1"))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT ledger.fan_out_webhooks()")
        [(delivery_id, event_id)] = conn.execute(
            "SELECT delivery_id, event_id FROM ledger.webhook_deliveries"
        ).fetchall()
        conn.execute("SELECT * FROM ledger.claim_webhook_deliveries(10, interval '30 s')")
        conn.execute(
            "SELECT ledger.record_webhook_attempts(%s)",
            (json.dumps([{"delivery_id": delivery_id, "attempt": 1, "ok": False,
                          "status_code": 502, "error": "HTTP 502: bad gateway", "retry_in": 60}]),),
        )
    log = ok(ledger("webhooks", "log", str(endpoint_id)))
    assert "entry.posted" in log and "HTTP 502: bad gateway; next try" in log
    attempts = ok(ledger("webhooks", "log", str(endpoint_id), "--attempts"))
    assert "retry" in attempts and "HTTP 502" in attempts
    as_json = json.loads(ok(ledger("webhooks", "log", str(endpoint_id), "--json")))
    assert as_json[0]["event_id"] == event_id and as_json[0]["status"] == "pending"
    resent = ok(ledger("webhooks", "resend", str(event_id)))
    assert resent == f"event {event_id} to endpoint {endpoint_id}: due now (evt_{event_id})\n"
    missing = ledger("webhooks", "resend", "999999")
    assert missing.exit_code == 1 and "999999" in missing.output


def test_events_prune(ledger: Invoke, db_url: str) -> None:
    for i in range(5):
        ok(ledger("post", "alice", "CREDIT_ADD", "--amount", "1", "--key", f"k{i}"))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT ledger.relay_events()")
    assert ok(ledger("events", "prune")) == "pruned 0 events and 0 webhook deliveries\n"
    out = ok(ledger("events", "prune", "--older-than", "0s", "--batch", "2"))
    assert out == "pruned 5 events and 0 webhook deliveries\n"
    bad = ledger("events", "prune", "--older-than", "soon")
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_run_refuses_a_lease_shorter_than_the_timeout(ledger: Invoke) -> None:
    result = ledger("webhooks", "run", "--timeout", "10", "--lease", "5")
    assert result.exit_code == 2 and "lease must be at least the timeout" in result.output


def test_run_needs_a_migrated_database(blank_db_url: str, cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        cli, ["webhooks", "run"], env={"LEDGER_DATABASE_URL": blank_db_url}
    )
    assert result.exit_code == 1 and "run `ledger migrate` first" in result.output


def test_run_stops_cleanly_on_sigterm(db_url: str, cli_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        ledger_command("webhooks", "run", "--poll-interval", "0.1"),
        env=dict(cli_env, LEDGER_DATABASE_URL=db_url, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(REPO),
    )
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "dispatching webhooks from" in out and "stopped: 0 attempts" in out


# ---- the dispatcher's own rules ---------------------------------------------------------------


def test_retry_delays_double_with_equal_jitter_up_to_the_cap() -> None:
    low = [retry_delay(n, 5, 3600, rand=lambda: 0.0) for n in range(1, 12)]
    high = [retry_delay(n, 5, 3600, rand=lambda: 1.0) for n in range(1, 12)]
    assert high[:5] == [5, 10, 20, 40, 80]
    assert low[:5] == [2.5, 5, 10, 20, 40]
    assert max(high) == 3600 and max(low) == 1800
    assert retry_delay(10_000, 5, 3600, rand=lambda: 1.0) == 3600  # no overflow


@pytest.mark.parametrize(
    "changes",
    [{"lease": 10.5, "timeout": 10}, {"per_endpoint": 65}, {"poll_interval": 0},
     {"backoff_base": 10, "backoff_max": 5}, {"horizon": timedelta(seconds=-1)}],
)
def test_a_config_that_could_break_a_promise_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DispatcherConfig(**changes)


def test_signed_headers_follow_standard_webhooks() -> None:
    """The signature computed here from the specification's definition: v1,
    base64 of HMAC-SHA256 keyed with the secret's base64-decoded bytes, over
    "<webhook-id>.<webhook-timestamp>.<body>"."""
    import base64
    import hashlib
    import hmac
    from datetime import datetime, timezone

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    body = '{"type":"entry.posted"}'
    headers = signed_headers(secret, "evt_1", body, at)
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == "1893553445"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"evt_1.1893553445.{body}".encode(), hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
    assert headers["content-type"] == "application/json"


# ---- `make run`: a dispatcher beside the API ----------------------------------------------------


def test_make_run_serves_with_a_dispatcher() -> None:
    recipe = (REPO / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "ledger serve --demo --dispatcher" in recipe


def test_serve_with_a_dispatcher_delivers_and_stops_it(
    data_dir: Path, cli_env: dict[str, str], cli_base: Path
) -> None:
    from tests.reliability.webhook_receiver import Receiver

    from .helpers import free_port
    from .test_serve import http, serving

    env = dict(cli_env, LEDGER_DATA_DIR=str(data_dir), LEDGER_DB_PORT=str(free_port()))
    log = cli_base / f"{data_dir.name}.log"
    with Receiver() as receiver, serving(env, log, "--demo", "--dispatcher") as (base, log):
        output = log.read_text()
        token = re.search(r"API key for example_app: (\S+)", output)
        assert token and "webhook dispatcher running (pid" in output, output
        status, created = http("POST", f"{base}/webhooks", token[1], {"url": receiver.url})
        assert status == 201, created
        receiver.secret = created["secret"]
        status, _ = http(
            "POST",
            f"{base}/ledger",
            token[1],
            {"owner_id": "erin", "operation": "CREDIT_ADD", "amount": 7},
            {"Idempotency-Key": "with-dispatcher"},
        )
        assert status == 201
        receiver.wait_for(lambda r: len(r.received) == 1, timeout=30)
    [got] = receiver.received
    assert got.event["type"] == "entry.posted" and got.event["payload"]["amount"] == 7
    assert receiver.verified == 1
    # The dispatcher was stopped with the server, cleanly.
    assert "stopped: 1 attempts, 1 delivered, 0 failed" in log.read_text()


# ---- the README's example ----------------------------------------------------------------------


def test_the_readmes_signature_check_runs_as_written() -> None:
    """The Python block of the README's webhooks section, as a receiver would
    paste it: it takes a request the dispatcher signed (signed_headers), and
    refuses the same request with a changed body, another secret, or an old
    timestamp."""
    from datetime import datetime, timezone

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("<!-- section: webhooks -->", 1)[1].split("<!-- /section: webhooks -->")[0]
    [block] = re.findall(r"```python\n(.*?)```", section, re.S)
    handled: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()

    def seen_before(webhook_id: str) -> bool:
        if webhook_id in seen:
            return True
        seen.add(webhook_id)
        return False

    namespace: dict[str, Any] = {
        "seen_before": seen_before,
        "handle": lambda kind, data: handled.append((kind, data)),
    }
    exec(compile(block, "README.md", "exec"), namespace)
    receive = namespace["receive"]
    secret = re.search(r'Webhook\("(whsec_[^"]+)"\)', block)
    assert secret
    body = json.dumps({"type": "entry.posted", "timestamp": "2030-01-02T03:04:05Z",
                       "data": {"event_id": 7, "owner_id": "alice", "seq": 3}})
    headers = signed_headers(secret[1], "evt_7", body, datetime.now(timezone.utc))
    assert receive(body.encode(), headers) == 204
    assert handled == [("entry.posted", {"event_id": 7, "owner_id": "alice", "seq": 3})]
    assert receive(body.encode(), headers) == 200  # the same webhook-id again: a repeat
    assert receive(body.replace("alice", "mallory").encode(), headers) == 400
    other = signed_headers("whsec_" + "B" * 43 + "=", "evt_7", body, datetime.now(timezone.utc))
    assert receive(body.encode(), other) == 400
    old = signed_headers(secret[1], "evt_7", body, datetime(2020, 1, 1, tzinfo=timezone.utc))
    assert receive(body.encode(), old) == 400
    assert len(handled) == 1
