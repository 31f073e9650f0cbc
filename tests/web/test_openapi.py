"""The served OpenAPI document: valid OpenAPI 3, complete, docs served offline."""

from __future__ import annotations

import re
from typing import Any

from apiflask import APIFlask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from tests.web.helpers import openapi_path

HIDDEN = {
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/docs/assets/{filename}",
    "/static/{filename}",
}


def test_served_document_is_valid_openapi_3(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json
    # 3.0: the Swagger UI of swagger-ui-bundle (4.x) cannot render a 3.1 document.
    assert spec["openapi"].startswith("3.0.")
    validate(spec)


def test_document_lists_every_route_and_method(app: APIFlask, client: FlaskClient) -> None:
    spec: dict[str, Any] = client.get("/openapi.json").json
    routes = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
        and openapi_path(rule.rule) not in HIDDEN
        # The operators' console: HTML pages for people, not the API.
        and not rule.rule.startswith("/console/")
    }
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented
    # The original paths are there, with their aliases.
    for path in (
        "/health",
        "/balance/{owner_id}",
        "/ledger",
        "/content",
        "/content/{content_id}/access",
        "/ledger/{owner_id}/balance",
        "/ledger/entry",
    ):
        assert path in spec["paths"]
    assert spec["components"]["securitySchemes"]["BearerAuth"]["scheme"].lower() == "bearer"


def _local_assets(html: str) -> list[str]:
    found = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert found
    for url in found:
        assert not url.startswith(("http:", "https:", "//")), f"{url} needs the internet"
    return found


def _fetch(client: FlaskClient, url: str) -> None:
    with client.get(url) as asset:
        assert asset.status_code == 200 and len(asset.data) > 100, url


def test_swagger_ui_and_redoc_work_offline(client: FlaskClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and b"SwaggerUIBundle" in docs.data
    for url in _local_assets(docs.get_data(as_text=True)):
        _fetch(client, "/" + url.lstrip("/"))
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and b"Redoc.init" in redoc.data
    for url in _local_assets(redoc.get_data(as_text=True)):
        _fetch(client, url)
    assert b"/openapi.json" in redoc.data


def _parameters(operation: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["in"], p["name"]): p for p in operation.get("parameters", [])}


def _schema(spec: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return spec["components"]["schemas"][ref["$ref"].rpartition("/")[2]]  # type: ignore[no-any-return]


def test_the_grant_endpoints_are_documented(client: FlaskClient) -> None:
    """Each grant endpoint with its parameters, body, answers and errors."""
    spec: dict[str, Any] = client.get("/openapi.json").json
    paths = spec["paths"]

    listing = paths["/owners/{owner_id}/grants"]["get"]
    assert _parameters(listing)[("query", "include_closed")]["schema"]["type"] == "boolean"
    grant_list = _schema(spec, listing["responses"]["200"]["content"]["application/json"]["schema"])
    grant = _schema(spec, grant_list["properties"]["grants"]["items"])
    assert {"grant_id", "entry_id", "remaining", "priority", "expires_at", "status"} <= set(
        grant["required"]
    )
    assert grant["properties"]["expires_at"]["nullable"] is True
    assert "expired" in grant["properties"]["status"]["description"]

    granting = paths["/grants"]["post"]
    assert ("header", "Idempotency-Key") in _parameters(granting)
    body = _schema(spec, granting["requestBody"]["content"]["application/json"]["schema"])
    assert body["properties"]["expires_at"]["format"] == "date-time"
    assert body["properties"]["priority"]["type"] == "integer"
    assert set(body["required"]) == {"owner_id", "operation"}
    assert {"200", "201", "403", "409", "422"} <= set(granting["responses"])
    assert "Idempotent-Replayed" in granting["responses"]["200"]["headers"]

    voiding = paths["/grants/{grant_id}/void"]["post"]
    assert ("path", "grant_id") in _parameters(voiding)
    assert "grant" in voiding["responses"]["409"]["description"]
    assert {"200", "201", "403", "404", "409"} <= set(voiding["responses"])
    void_body = _schema(spec, voiding["requestBody"]["content"]["application/json"]["schema"])
    assert {"reason", "owner_id", "nonce"} <= set(void_body["properties"])

    spending = paths["/owners/{owner_id}/spending"]["get"]
    params = _parameters(spending)
    assert {("query", "entry_id"), ("query", "grant_id"), ("query", "limit")} <= set(params)
    rows = _schema(spec, spending["responses"]["200"]["content"]["application/json"]["schema"])
    row = _schema(spec, rows["properties"]["spending"]["items"])
    assert "negative" in row["properties"]["amount"]["description"]

    for operation in (listing, granting, voiding, spending):
        assert operation["summary"] and operation["security"] == [{"BearerAuth": []}]
