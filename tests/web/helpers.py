"""Helpers of the HTTP tests."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from typing import Any

from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator


def openapi_path(rule: str) -> str:
    """Werkzeug rule -> OpenAPI path: /holds/<int:hold_id> -> /holds/{hold_id}."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


def check_against_spec(
    spec: dict[str, Any], path: str, method: str, status: int, body: Any
) -> None:
    """The status is documented for the operation and the JSON body is valid."""
    operation = spec["paths"][path][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {path}: status {status} is not documented"
    content = responses[str(status)].get("content", {}).get("application/json")
    if content is None or "schema" not in content:
        return
    schema = {**content["schema"], "components": spec["components"]}
    errors = sorted(OAS30Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{method} {path} {status}: {[e.message for e in errors]}\n{body}"


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def fund(
    client: FlaskClient, auth: dict[str, str], owner_id: str, amount: int, key: str | None = None
) -> None:
    """Credit an owner through the API (CREDIT_ADD)."""
    response = client.post(
        "/ledger",
        json={"owner_id": owner_id, "operation": "CREDIT_ADD", "amount": amount},
        headers={**auth, "Idempotency-Key": key or f"fund-{owner_id}-{amount}"},
    )
    assert response.status_code == 201, response.json


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the common error shape and return the body."""
    body = response.json
    assert response.status_code == status, (response.status_code, body)
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(
    base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")
