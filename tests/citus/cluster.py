"""A local Citus cluster for tests: a coordinator and workers on 127.0.0.1.

Each node is its own `initdb -E UTF8` cluster under one temporary folder,
started with `pg_ctl` as the unprivileged server user when we are root (the
same setpriv prefix as the single throwaway server), with `HOME` set to that
user's home: libpq inside the server reads `~/.postgresql` when Citus
connects to the workers. Settings: `shared_preload_libraries = 'citus'`,
`max_prepared_transactions` > 0 (multi-shard transactions commit with
two-phase commit), fsync off, TCP on 127.0.0.1 only with trust
authentication. Then `CREATE EXTENSION citus` on every node, and on the
coordinator `citus_set_coordinator_host` and one `citus_add_node` per worker.

Citus keeps its metadata per database: `create_database()` makes a database
on every node and registers the workers in it, as the `postgres` database is
registered at start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

# The one import of the server helpers (initdb, pg_ctl, setpriv as root): if they
# move, this line is the only one to change.
from ledger_cli import pgserver

HOST = "127.0.0.1"
SUPERUSER = "postgres"
INSTALL_HINT = "install Citus 12.1 for this PostgreSQL (Citus's own packages, or its source: README, section Citus)"

_SETTINGS = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",
    "shared_preload_libraries": "citus",
    "max_connections": "200",
    "max_prepared_transactions": "200",
    # Citus runs a maintenance daemon per database: the tests make many.
    "max_worker_processes": "64",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
    "shared_buffers": "64MB",
}

_HBA = f"local all all trust\nhost all all {HOST}/32 trust\n"


class CitusUnavailable(RuntimeError):
    """The PostgreSQL that the tests use has no Citus extension."""


class ClusterStartFailed(RuntimeError):
    """initdb, pg_ctl or the Citus set-up failed; the message quotes the log."""


def citus_library() -> Path | None:
    """citus.so of the PostgreSQL whose `postgres` the tests run, or None."""
    try:
        postgres = Path(pgserver.find_program("postgres")).resolve()
    except pgserver.PostgresBinariesMissing:
        return None
    folders: list[Path] = []
    pg_config = postgres.parent / "pg_config"
    if pg_config.exists():
        result = subprocess.run(
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            folders.append(Path(result.stdout.strip()))
    # Debian's /usr/lib/postgresql/N/{bin,lib}; a source build's PREFIX/{bin,lib/postgresql}.
    folders += [postgres.parent.parent / "lib", postgres.parent.parent / "lib" / "postgresql"]
    for folder in folders:
        if (folder / "citus.so").exists():
            return folder / "citus.so"
    return None


def require_citus() -> None:
    if citus_library() is None:
        raise CitusUnavailable(f"Citus is not installed: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def url(port: int, database: str = "postgres", user: str = SUPERUSER) -> str:
    return f"postgresql://{user}@{HOST}:{port}/{database}"


def _server_env() -> dict[str, str]:
    """The environment of the server processes: the server user's HOME, no PG* variables
    (libpq inside the server would apply them to Citus's connections to the workers)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    user = pgserver.server_user()
    if user is not None:
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    return env


@dataclass
class Node:
    name: str
    data: Path
    log: Path
    port: int = 0

    def url(self, database: str = "postgres") -> str:
        return url(self.port, database)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class CitusCluster:
    base: Path
    coordinator: Node
    workers: list[Node]
    started_in: float = 0.0  # seconds from nothing to a registered cluster
    _running: list[Node] = field(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        return [self.coordinator, *self.workers]

    def url(self, database: str = "postgres") -> str:
        """The coordinator's superuser URL."""
        return self.coordinator.url(database)

    def stop(self) -> None:
        prefix, env = pgserver.command_prefix(), _server_env()
        pg_ctl = pgserver.find_program("pg_ctl")
        running, self._running = self._running, []
        processes = [
            subprocess.Popen(
                [*prefix, pg_ctl, "stop", "-D", str(node.data), "-m", "immediate", "-w"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for node in running
        ]
        for process in processes:
            process.wait(timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


def _run_all(commands: list[list[str]], env: dict[str, str], what: str) -> None:
    processes = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for command in commands
    ]
    failures = []
    for process in processes:
        output, _ = process.communicate(timeout=180)
        if process.returncode != 0:
            failures.append(output.strip()[-2000:])
    if failures:
        raise ClusterStartFailed(f"{what} failed:\n" + "\n---\n".join(failures))


def start_cluster(workers: int = 2, settings: dict[str, str] | None = None) -> CitusCluster:
    """initdb, start and register a coordinator and `workers` workers; stop() ends them."""
    require_citus()
    began = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="ledger-citus-", dir="/tmp"))
    names = ["coordinator", *(f"worker{i}" for i in range(1, workers + 1))]
    nodes = [Node(name, base / name, base / f"{name}.log") for name in names]
    cluster = CitusCluster(base, nodes[0], nodes[1:])
    prefix, env = pgserver.command_prefix(), _server_env()
    try:
        pgserver.hand_over(base)
        initdb = pgserver.find_program("initdb")
        _run_all(
            [
                [
                    *prefix,
                    initdb,
                    "-D",
                    str(node.data),
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "--no-sync",
                ]
                for node in nodes
            ],
            env,
            "initdb",
        )
        for node in nodes:
            node.port = free_port()
            options = {**_SETTINGS, **(settings or {}), "port": str(node.port)}
            with open(node.data / "postgresql.conf", "a") as conf:
                conf.write("\n# tests/citus/cluster.py\n")
                conf.writelines(f"{key} = '{value}'\n" for key, value in options.items())
            (node.data / "pg_hba.conf").write_text(_HBA)
        pgserver.hand_over(base)
        pg_ctl = pgserver.find_program("pg_ctl")
        cluster._running = list(nodes)
        try:
            _run_all(
                [
                    [
                        *prefix,
                        pg_ctl,
                        "start",
                        "-D",
                        str(node.data),
                        "-l",
                        str(node.log),
                        "-w",
                        "-t",
                        "60",
                    ]
                    for node in nodes
                ],
                env,
                "pg_ctl start",
            )
        except ClusterStartFailed as error:
            logs = "\n".join(f"{node.name}.log:\n{node.log_tail()}" for node in nodes)
            raise ClusterStartFailed(f"{error}\n{logs}") from None
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda node: _create_extension(node.url()), nodes))
        _register(cluster.url(), cluster.coordinator.port, [w.port for w in cluster.workers])
    except BaseException:
        cluster.stop()
        raise
    cluster.started_in = time.monotonic() - began
    return cluster


def _create_extension(node_url: str) -> None:
    with psycopg.connect(node_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS citus")


def _register(coordinator_url: str, coordinator_port: int, worker_ports: list[int]) -> None:
    with psycopg.connect(coordinator_url, autocommit=True) as conn:
        conn.execute("SELECT citus_set_coordinator_host(%s, %s)", (HOST, coordinator_port))
        for port in worker_ports:
            conn.execute("SELECT citus_add_node(%s, %s)", (HOST, port))


def nodes_of(coordinator_url: str) -> tuple[int, list[tuple[str, int]]]:
    """(coordinator port, [(host, port) of each worker]) as the coordinator has them."""
    with psycopg.connect(coordinator_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT groupid, nodename, nodeport FROM pg_dist_node ORDER BY groupid"
        ).fetchall()
    coordinator = [port for group, _, port in rows if group == 0]
    workers = [(host, port) for group, host, port in rows if group != 0]
    return (coordinator[0] if coordinator else 0), workers


def _with_database(node_url: str, database: str) -> str:
    return node_url.rsplit("/", 1)[0] + "/" + database


def create_database(coordinator_url: str, name: str) -> str:
    """A new database on every node with Citus and the same workers; its coordinator URL.

    Citus 12.1 does not propagate CREATE DATABASE, and its metadata is per database.
    """
    coordinator_port, workers = nodes_of(coordinator_url)
    worker_urls = [f"postgresql://{SUPERUSER}@{host}:{port}/postgres" for host, port in workers]
    for node_url in [coordinator_url, *worker_urls]:
        with psycopg.connect(node_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        _create_extension(_with_database(node_url, name))
    new_url = _with_database(coordinator_url, name)
    _register(new_url, coordinator_port, [port for _, port in workers])
    return new_url


def _rollback_prepared(node_url: str, name: str) -> None:
    """Roll back the prepared transactions of database `name` on one node."""
    with psycopg.connect(node_url, autocommit=True) as conn:
        gids = [
            gid
            for (gid,) in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,)
            ).fetchall()
        ]
    if not gids:
        return
    # ROLLBACK PREPARED runs in the transaction's database, which
    # drop_database closed to connections: opened for this moment.
    _allow_connections(node_url, name, True)
    try:
        with psycopg.connect(_with_database(node_url, name), autocommit=True) as conn:
            for gid in gids:
                try:
                    conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
                except psycopg.errors.UndefinedObject:
                    pass  # resolved meanwhile
    finally:
        _allow_connections(node_url, name, False)


def _allow_connections(node_url: str, name: str, allow: bool) -> None:
    """ALTER DATABASE name ALLOW_CONNECTIONS on one node (none if it is gone)."""
    with psycopg.connect(_with_database(node_url, "postgres"), autocommit=True) as conn:
        try:
            conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(name), sql.SQL("true" if allow else "false")
                )
            )
        except psycopg.errors.InvalidCatalogName:
            pass


def drop_database(coordinator_url: str, name: str) -> None:
    """Drop a database of create_database() on every node.

    Each node's database is first closed to new connections: Citus's
    maintenance daemon of a database connects to it (on a worker, to its own
    node) every few seconds, and such a connection, arriving while DROP
    DATABASE holds the database's lock, waits for that lock; DROP then waits
    for it in turn and gives up after 5 s (ObjectInUse), again and again.
    A connection refused outright leaves DROP nothing to wait for.
    """
    _, workers = nodes_of(coordinator_url)
    worker_urls = [f"postgresql://{SUPERUSER}@{host}:{port}/postgres" for host, port in workers]
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    for node_url in [coordinator_url, *worker_urls]:
        _allow_connections(node_url, name, False)
    for node_url in [coordinator_url, *worker_urls]:
        with psycopg.connect(node_url, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn.execute(statement)
                    break
                except psycopg.errors.ObjectInUse:
                    # FORCE ends client sessions only: Citus's maintenance daemon
                    # of that database may still be there for a moment, and a
                    # worker may keep a prepared transaction of a two-phase commit
                    # whose coordinator is gone (rolled back here: the database goes).
                    if time.monotonic() > deadline:
                        # A throwaway database of the test cluster that will
                        # not go: left behind (the cluster itself is removed
                        # with its folder at the end of the session) rather
                        # than failing an unrelated test.
                        print(f"could not drop {name} on {node_url}: left behind", file=sys.stderr)
                        break
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()",
                        (name,),
                    )
                    _rollback_prepared(node_url, name)
                    time.sleep(0.05)


def freeze_template(coordinator_url: str, name: str) -> None:
    """Make a database of create_database() a template that clone_database() copies.

    CREATE DATABASE ... TEMPLATE needs a source nobody is connected to, and
    Citus keeps a maintenance daemon (and cached connections) in every
    database that has the extension: connections are refused from now on and
    the present ones ended, on every node.
    """
    _, workers = nodes_of(coordinator_url)
    worker_urls = [f"postgresql://{SUPERUSER}@{host}:{port}/postgres" for host, port in workers]
    for node_url in [_with_database(coordinator_url, "postgres"), *worker_urls]:
        _allow_connections(node_url, name, False)
        with psycopg.connect(node_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


def clone_database(coordinator_url: str, template: str, name: str) -> str:
    """A copy of a frozen template (freeze_template) on every node; its coordinator URL.

    The copy of each node's database carries that node's shards and Citus
    metadata, so the copies together form the same distributed database,
    in about a tenth of a second per node instead of seconds for a migration.
    """
    _, workers = nodes_of(coordinator_url)
    worker_urls = [f"postgresql://{SUPERUSER}@{host}:{port}/postgres" for host, port in workers]
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(template)
    )
    for node_url in [_with_database(coordinator_url, "postgres"), *worker_urls]:
        with psycopg.connect(node_url, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn.execute(statement)
                    break
                except psycopg.errors.ObjectInUse:
                    # A backend of the template still exiting.
                    if time.monotonic() > deadline:
                        # A template that will not let go: this test's
                        # database is not made (its first connection fails).
                        print(f"could not create {name} on {node_url}", file=sys.stderr)
                        break
                    time.sleep(0.05)
    return _with_database(coordinator_url, name)
