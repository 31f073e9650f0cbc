"""Fixtures of the HTTP tests: a fresh migrated database per test (db_url
from tests/conftest.py), a Ledger on it, the app, API keys of three apps,
and a client whose every response is checked against the served OpenAPI
document (status documented, body valid)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from apiflask import APIFlask
from flask import Response, request
from flask.testing import FlaskClient

from ledger_py.client import Ledger
from tests.web.helpers import check_against_spec, openapi_path
from web import close_app, create_app
from web.api_keys import create_api_key

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
    return {app: create_api_key(ledger, app)[1] for app in ("example_app", "core", OTHER_APP)}


@pytest.fixture
def auth(tokens: dict[str, str]) -> dict[str, str]:
    """Headers of an example_app request."""
    return {"Authorization": f"Bearer {tokens['example_app']}"}
