"""schemathesis against the served OpenAPI document: every operation of the
HTTP API gets generated requests (valid and invalid shapes, odd strings,
huge integers; schemathesis's positive mode, then its negative mode of
requests that break the document) with a valid API key of the core app; no answer may be a 5xx,
and every answer must conform to the document (status documented, content
type, headers, body schema).

In-process (WSGI), on a database of its own, with a few funded owners so
that writes succeed as well as fail. Examples per operation: 25 (the
LEDGER_SCHEMATHESIS_EXAMPLES variable overrides), derandomized.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from ledger_py import Ledger
from ledger_py.tokens import create_api_key
from tests.conftest import drop_database, new_database
from web import close_app, create_app

EXAMPLES = int(os.environ.get("LEDGER_SCHEMATHESIS_EXAMPLES", "25"))
STATUSES: Counter[str] = Counter()
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def web_ledger(server_url: str, template_url: str) -> Iterator[Ledger]:
    url = new_database(server_url)
    try:
        with Ledger(url, min_size=1, max_size=4) as ledger:
            for owner in ("alice", "bob", "0", "string"):
                ledger.post_entry(
                    owner_id=owner,
                    app="core",
                    operation="CREDIT_ADD",
                    idempotency_key=f"fund-{owner}",
                    amount=1000,
                )
            yield ledger
    finally:
        drop_database(server_url, url)


@pytest.fixture(scope="module")
def web_app(web_ledger: Ledger) -> Iterator[Any]:
    app = create_app({"LEDGER": web_ledger, "TESTING": True})
    yield app
    close_app(app)


@pytest.fixture(scope="module")
def core_token(web_ledger: Ledger) -> str:
    return create_api_key(web_ledger, app="core").token


@pytest.fixture(scope="module")
def api_schema(web_app: Any) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", web_app)


def _operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


# schemathesis's own pytest plugin (schema.parametrize) does not run under
# pytest 9 yet, so each operation's case strategy is driven with hypothesis here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_api_conforms_and_never_fails_with_5xx(
    api_schema: Any, core_token: str, mode: GenerationMode
) -> None:
    headers = {"Authorization": f"Bearer {core_token}"}
    operations = _operations(api_schema)
    assert len(operations) >= 15
    failures = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            STATUSES[f"{mode.value} {case.method} {case.path} {response.status_code}"] += 1

        try:
            run()
        except Unsatisfiable:
            # Negative mode cannot break an operation without parameters (GET /health).
            assert mode is GenerationMode.NEGATIVE
        except Exception as exc:  # one report for every operation that fails
            failures.append(f"{operation.label}: {exc}"[:3000])
    assert failures == [], "\n\n".join(failures)


def test_schemathesis_summary(web_ledger: Ledger) -> None:
    assert web_ledger.verify() == []
    by_status = Counter(f"{k.split(' ', 1)[0]} {k.rsplit(' ', 1)[1]}" for k in STATUSES.elements())
    total = sum(STATUSES.values())
    print(f"\nschemathesis: {total} requests, by status {dict(sorted(by_status.items()))}")
    print(f"operations exercised: {len({k.split(' ', 1)[1].rsplit(' ', 1)[0] for k in STATUSES})}")
