"""docker-compose.yml and the Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from .helpers import REPO


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def ports_of(service: dict[str, Any]) -> set[str]:
    return {str(port) for port in service.get("ports", [])}


def test_the_services_of_the_seed(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "postgres_test", "pgadmin", "web"}
    for name, database, port in (
        ("postgres", "ledger_db", "5432"),
        ("postgres_test", "test_ledger_db", "5433"),
    ):
        service = services[name]
        assert service["image"] == "postgres:16"
        assert f"{port}:5432" in ports_of(service)
        assert service["environment"]["POSTGRES_DB"] == database
        assert "-E UTF8" in service["environment"]["POSTGRES_INITDB_ARGS"]
        check = service["healthcheck"]
        assert "pg_isready" in " ".join(check["test"]) and database in " ".join(check["test"])
        assert {"interval", "timeout", "retries"} <= set(check)
    assert ports_of(services["pgadmin"]) == {"5050:80"}
    assert services["pgadmin"]["image"].startswith("dpage/pgadmin4")


def test_web_migrates_then_serves_the_compose_database(compose: dict[str, Any]) -> None:
    services = compose["services"]
    web = services["web"]
    assert web["build"] == "." and (REPO / "Dockerfile").exists()
    command = " ".join(web["command"]) if isinstance(web["command"], list) else web["command"]
    assert re.search(r"ledger migrate\s*&&\s*(exec )?ledger serve", command)

    env = web["environment"]
    url = urlsplit(env["LEDGER_DATABASE_URL"])
    assert url.hostname == "postgres" and url.port == 5432  # the compose service, its inner port
    assert url.path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
    assert url.password == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert env["LEDGER_HOST"] == "0.0.0.0"  # reachable through the published port
    assert f"8000:{env['LEDGER_PORT']}" in ports_of(web)
    assert web["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(web["healthcheck"]["test"])


def test_the_image_installs_what_the_package_needs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for folder in ("ledger_py", "web", "sql", "migrations"):
        assert re.search(rf"^COPY {folder} ", dockerfile, re.MULTILINE), folder
    assert "pip install" in dockerfile and "USER " in dockerfile  # not root at run time
    assert 'CMD ["sh", "-c", "ledger migrate && exec ledger serve"]' in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignored)
