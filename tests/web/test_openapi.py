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
        if method not in ("HEAD", "OPTIONS") and openapi_path(rule.rule) not in HIDDEN
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
