"""Fixtures of the HTTP tests: a fresh migrated database per test (db_url
from tests/conftest.py), a Ledger on it, the app, API keys of three apps,
and a client whose every response is checked against the served OpenAPI
document (status documented, body valid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from apiflask import APIFlask
from flask import Response, request
from flask.testing import FlaskClient

from ledger_py.client import Ledger
from ledger_py.tokens import create_api_key
from tests.web.helpers import call, check_against_spec, free_port, openapi_path
from web import close_app, create_app

ROOT = Path(__file__).resolve().parents[2]
OTHER_APP = "other_app"  # a second app with an operation of its own


class SpecCheckedClient(FlaskClient):
    """Every JSON response of a routed request is validated against the spec."""

    checked: list[tuple[str, str, int]]

    def open(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        response = super().open(*args, **kwargs)
        seen = getattr(self.application, "_last_rule", None)
        if seen is not None and response.is_json:
            rule, method = seen
            self.application._last_rule = None  # type: ignore[attr-defined]
            if not rule.startswith(("/openapi", "/docs", "/redoc", "/static")):
                spec = self.application.extensions["served_spec"]
                check_against_spec(
                    spec, openapi_path(rule), method, response.status_code, response.json
                )
                self.checked.append((openapi_path(rule), method, response.status_code))
        return response


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    with Ledger(db_url, min_size=1, max_size=8) as instance:
        instance.define_app(app=OTHER_APP, description="second app of the tests")
        instance.define_operation(
            app=OTHER_APP,
            operation="OTHER_SPEND",
            direction="debit",
            default_amount=1,
            caller_sets_amount=True,
            max_amount=100,
        )
        yield instance


@pytest.fixture
def app(ledger: Ledger) -> Iterator[APIFlask]:
    application = create_app({"LEDGER": ledger, "TESTING": True})

    @application.after_request
    def remember_rule(response: Response) -> Response:
        if request.url_rule is not None:
            application._last_rule = (request.url_rule.rule, request.method)  # type: ignore[attr-defined]
        return response

    application.test_client_class = SpecCheckedClient
    # The document as served, once per app: responses are checked against it.
    application.extensions["served_spec"] = application.test_client().get("/openapi.json").json
    yield application
    close_app(application)


@pytest.fixture
def client(app: APIFlask) -> SpecCheckedClient:
    c = app.test_client()
    assert isinstance(c, SpecCheckedClient)
    c.checked = []
    return c


@pytest.fixture
def tokens(ledger: Ledger) -> dict[str, str]:
    """One API key token per app: example_app, core, other_app."""
    return {
        app: create_api_key(ledger, app=app).token for app in ("example_app", "core", OTHER_APP)
    }


@pytest.fixture
def auth(tokens: dict[str, str]) -> dict[str, str]:
    """Headers of an example_app request."""
    return {"Authorization": f"Bearer {tokens['example_app']}"}


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, str]]:
    """(base URL, example_app token) of `gunicorn -c python:web.gunicorn_conf` serving db_url."""
    with serving(db_url) as served:
        yield served


@contextmanager
def serving(db_url: str, stderr: Path | None = None, **settings: str) -> Iterator[tuple[str, str]]:
    """Run the served stack (2 workers unless LEDGER_WORKERS is given) on a free
    loopback port with the given LEDGER_* settings; SIGINT it afterwards.
    `stderr`: a file that receives the server's log (default: a pipe read on failure)."""
    with Ledger(db_url, max_size=2) as ledger:
        token = create_api_key(ledger, app="example_app").token
    port = free_port()
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": db_url,
        "LEDGER_POOL_SIZE": "4",
        "LEDGER_WORKERS": "2",
        "LEDGER_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
        **settings,
    }
    log = None if stderr is None else stderr.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:web.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "/dev/null",
            "web.wsgi:app",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if log is None else log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if call(base, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "gunicorn did not answer in 20 s"
            time.sleep(0.1)
        yield base, token
    finally:
        process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
        try:
            process.wait(timeout=15)
        finally:
            if process.stderr:
                process.stderr.close()
            if log is not None:
                log.close()
            if process.poll() is None:
                process.kill()
                process.wait()
