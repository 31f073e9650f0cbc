"""The `ledger` command: the embedded database, migrations, the HTTP server, API keys
and a few ledger calls for people at a terminal.

Configuration comes from options or environment variables (README,
"Configuration"). With no LEDGER_DATABASE_URL every command works on the
embedded cluster under LEDGER_DATA_DIR (ledger_cli.localdb). Every failure
crosses one boundary (`LedgerGroup.invoke`) that turns it into one line on
stderr and a non-zero exit status, never a traceback (unless
LEDGER_LOG_LEVEL=debug), with any database password masked.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from ledger_cli import localdb, pgserver
from ledger_py import Ledger, conninfo, tokens
from ledger_py.client import DEFAULT_STATEMENT_TIMEOUT
from ledger_py.conninfo import libpq_url, mask_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_WORKERS = 2
DEFAULT_POOL_SIZE = 5
DEMO_APP = "example_app"
# Above this many entries (planner estimate) `ledger verify` shows a progress bar.
VERIFY_PROGRESS_THRESHOLD = 100_000
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

log = logging.getLogger("ledger_cli.cli")


@dataclass
class Settings:
    database_url: str | None
    data_dir: str
    db_port: int | None
    log_level: str

    @property
    def embedded(self) -> bool:
        return not self.database_url

    def cluster(self) -> localdb.LocalCluster:
        return localdb.LocalCluster(self.data_dir, self.db_port)

    def url(self, *, start: bool = False) -> str:
        """The database to use: LEDGER_DATABASE_URL, else the embedded cluster.

        start=True starts the embedded cluster when it is not running;
        otherwise a stopped cluster is an error that says how to start it.
        """
        if self.database_url:
            return self.database_url
        cluster = self.cluster()
        if start:
            cluster.start(wait_for_lock=60)
        elif cluster.running_pid() is None:
            raise localdb.LocalDbError(
                f"the embedded database ({cluster.data_dir}) is not running: start it with "
                "`ledger db start`, or set LEDGER_DATABASE_URL to use another server"
            )
        return cluster.url()


# -- the one error boundary -------------------------------------------------


def _describe(exc: BaseException, url: str | None) -> str:
    """One line for a person, saying what failed and, where we can, what to do."""
    import psycopg

    from ledger_py.errors import LedgerError, LedgerUnavailable

    target = _where(url)
    if isinstance(exc, LedgerUnavailable):
        return f"cannot reach the database{target}: {_first_line(exc.message)}"
    if isinstance(exc, LedgerError):
        return f"{exc.code}: {_first_line(exc.message)}"
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot reach the database{target}: {_first_line(str(exc))}"
    if isinstance(exc, psycopg.Error):
        return f"database error{target}: {_first_line(str(exc))}"
    if isinstance(exc, (localdb.LocalDbError, pgserver.PostgresBinariesMissing)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return (
        f"unexpected {type(exc).__name__}: {_first_line(str(exc))} "
        "(LEDGER_LOG_LEVEL=debug shows details)"
    )


def _where(url: str | None) -> str:
    found = conninfo.target(url) if url else None
    if found is None:
        return ""
    return f" at {found.host or 'localhost'}:{found.port or 5432}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


class LedgerGroup(click.Group):
    """Runs a command; any failure becomes one clean line (click prints `Error: ...`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as exc:
            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            url = settings.database_url if settings else None
            if settings and settings.embedded:
                url = _embedded_url_or_none(settings)
            if settings and settings.log_level == "debug":
                raise
            raise click.ClickException(conninfo.redact(_describe(exc, url), url)) from None


def _embedded_url_or_none(settings: Settings) -> str | None:
    try:
        return settings.cluster().url()
    except Exception:
        return None


# -- helpers ----------------------------------------------------------------


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None
    return settings


@contextmanager
def _open_ledger(
    url: str, statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT
) -> Iterator[Ledger]:
    """A one-connection Ledger. statement_timeout=None for a command that
    may rightly run long (verify reads the whole journal; Ctrl-C stops it)."""
    import psycopg


    # One plain connection first: an unreachable server fails at once with
    # libpq's reason, where a pool would retry until its timeout.
    psycopg.connect(libpq_url(url), connect_timeout=10).close()
    with Ledger(
        url, min_size=1, max_size=1, timeout=10.0, statement_timeout=statement_timeout
    ) as ledger:
        yield ledger


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a result (dataclasses, decimals, datetimes)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


class AsciiInt(click.IntRange):
    """An integer written with ASCII digits only (an optional sign, then 0-9).

    Python's int() also reads full-width or other Unicode digits (U+FF10 is
    0), underscores and surrounding spaces: a command line that means money
    or ids takes none of them."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not _ASCII_INTEGER.fullmatch(value):
            self.fail(f"{value!r} is not a valid integer (ASCII digits only)", param, ctx)
        return super().convert(value, param, ctx)


_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")


@contextmanager
def _options_named(fields: dict[str, str]) -> Iterator[None]:
    """An InvalidArgument or InvalidAmount about a wrapper field an option gave
    is reported as that option's usage error (e.g. --before, not after_id)."""
    from ledger_py.errors import InvalidAmount, InvalidArgument

    try:
        yield
    except (InvalidArgument, InvalidAmount) as exc:
        option = fields.get(str(exc.detail.get("field")))
        if option is None:
            raise
        reason = exc.detail.get("reason") or _first_line(exc.message)
        bounds = [f"{end} {exc.detail[end]}" for end in ("min", "max") if end in exc.detail]
        if bounds:
            reason += f" ({', '.join(bounds)})"
        raise click.BadParameter(f"{reason} ({exc.code})", param_hint=option) from None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(_plain(value), indent=2, sort_keys=False, default=str))


def _signed(amount: Any) -> str:
    return f"+{amount}" if amount is not None and amount > 0 else str(amount)


def _time(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


# -- the command group ------------------------------------------------------


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar="LEDGER_DATABASE_URL",
    metavar="URL",
    help="PostgreSQL URL [env LEDGER_DATABASE_URL]; unset: the embedded cluster.",
)
@click.option(
    "--data-dir",
    envvar="LEDGER_DATA_DIR",
    default=localdb.DEFAULT_DATA_DIR,
    show_default=True,
    metavar="DIR",
    help="Folder of the embedded cluster [env LEDGER_DATA_DIR].",
)
@click.option(
    "--db-port",
    envvar="LEDGER_DB_PORT",
    type=AsciiInt(1, 65535),
    default=None,
    help=f"Port of the embedded cluster [env LEDGER_DB_PORT; default {localdb.DEFAULT_PORT}].",
)
@click.option(
    "--log-level",
    envvar="LEDGER_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Log level [env LEDGER_LOG_LEVEL]; debug also shows tracebacks.",
)
@click.version_option(package_name="shared-ledger", prog_name="ledger")
@click.pass_context
def cli(
    ctx: click.Context, database_url: str | None, data_dir: str, db_port: int | None, log_level: str
) -> None:
    """The shared credit ledger: database, migrations, HTTP server, API keys."""
    level = log_level.lower()
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if level != "debug":
        # yoyo logs every migration step at INFO; the command prints a summary instead.
        logging.getLogger("yoyo").setLevel(max(logging.WARNING, logging.getLogger().level))
        # The error boundary reports connection failures once, in one line.
        logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    ctx.obj = Settings(
        database_url=database_url or None, data_dir=data_dir, db_port=db_port, log_level=level
    )


# -- ledger db ----------------------------------------------------------------


@cli.group()
def db() -> None:
    """The embedded PostgreSQL cluster (used when LEDGER_DATABASE_URL is unset)."""


def _describe_cluster(cluster: localdb.LocalCluster, url: str | None) -> list[str]:
    status = cluster.status()
    lines = [f"  data:   {status.data_dir}"]
    if cluster.relocated_because:
        lines.append(
            f"  server: {status.server_dir}  (the server user cannot reach the data folder: "
            f"{cluster.relocated_because})"
        )
    lines.append(f"  listen: {localdb.LISTEN_HOST}:{status.port}")
    if url:
        lines.append(f"  url:    {mask_url(url)}  (password in {cluster.password_file})")
    lines.append(
        f"  psql:   psql -h {status.socket_dir} -p {status.port} -U {localdb.SUPERUSER} "
        f"{localdb.DATABASE}"
    )
    return lines


@db.command("start")
@click.pass_context
def db_start(ctx: click.Context) -> None:
    """Create (first time) and start the embedded cluster."""
    cluster = _settings(ctx).cluster()
    started = cluster.start()
    status = cluster.status()
    verb = "started" if started else "already running"
    click.echo(f"embedded PostgreSQL {verb} (pid {status.pid})")
    for line in _describe_cluster(cluster, cluster.url()):
        click.echo(line)


@db.command("stop")
@click.pass_context
def db_stop(ctx: click.Context) -> None:
    """Stop the embedded cluster (its data stays)."""
    cluster = _settings(ctx).cluster()
    if cluster.stop():
        click.echo(f"embedded PostgreSQL stopped (data kept in {cluster.server_dir})")
    else:
        click.echo(f"embedded PostgreSQL was not running ({cluster.data_dir})")


@db.command("status")
@click.pass_context
def db_status(ctx: click.Context) -> None:
    """Say whether the embedded cluster runs (exit status 3 when it does not)."""
    cluster = _settings(ctx).cluster()
    status = cluster.status()
    if status.running:
        click.echo(f"embedded PostgreSQL running (pid {status.pid})")
        for line in _describe_cluster(cluster, cluster.url()):
            click.echo(line)
        return
    if status.initialized:
        click.echo(
            f"embedded PostgreSQL stopped (data in {status.data_dir}); `ledger db start` starts it"
        )
    else:
        click.echo(f"no embedded PostgreSQL in {status.data_dir} yet; `ledger db start` creates it")
    ctx.exit(3)


# -- ledger migrate -----------------------------------------------------------


@cli.command()
@click.argument("database_url", required=False, metavar="[DATABASE_URL]")
@click.option(
    "--citus",
    is_flag=True,
    help="Create the citus extension first if the database lacks it (a Citus coordinator).",
)
@click.pass_context
def migrate(ctx: click.Context, database_url: str | None, citus: bool) -> None:
    """Apply pending migrations and reload changed sql/ functions.

    Uses DATABASE_URL if given, else LEDGER_DATABASE_URL, else the embedded
    cluster (started if needed). On a Citus coordinator (the citus extension
    exists, or --citus) it also distributes the tables and the single-owner
    functions; on plain PostgreSQL nothing Citus-specific runs.
    """
    from ledger_py.migrate import migrate as run_migrations

    settings = _settings(ctx)
    if database_url:
        settings.database_url = database_url
    url = settings.url(start=True)
    done = run_migrations(url, citus=citus)
    click.echo(
        f"migrated {mask_url(url)}: " + (", ".join(done) if done else "nothing to do (up to date)")
    )


# -- ledger serve -------------------------------------------------------------


def _wsgi_target() -> str:
    if importlib.util.find_spec("web.wsgi") is not None:
        return "web.wsgi:app"
    return "web:create_app()"


@cli.command()
@click.option(
    "--host",
    envvar="LEDGER_HOST",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on [env LEDGER_HOST].",
)
@click.option(
    "--port",
    envvar="LEDGER_PORT",
    type=AsciiInt(1, 65535),
    default=DEFAULT_HTTP_PORT,
    show_default=True,
    help="HTTP port [env LEDGER_PORT].",
)
@click.option(
    "--workers",
    envvar="LEDGER_WORKERS",
    type=AsciiInt(1, 64),
    default=DEFAULT_WORKERS,
    show_default=True,
    help="gunicorn workers [env LEDGER_WORKERS].",
)
@click.option(
    "--pool-size",
    envvar="LEDGER_POOL_SIZE",
    type=AsciiInt(1, 1000),
    default=DEFAULT_POOL_SIZE,
    show_default=True,
    help="Database connections per worker [env LEDGER_POOL_SIZE].",
)
@click.option(
    "--demo",
    is_flag=True,
    help=f"Make sure {DEMO_APP} has an API key and print it with a curl example.",
)
@click.option(
    "--dispatcher",
    is_flag=True,
    help="Also run a webhook dispatcher (`ledger webhooks run`, default settings) beside the "
    "API, stopped with it.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    workers: int,
    pool_size: int,
    demo: bool,
    dispatcher: bool,
) -> None:
    """Serve the HTTP API with gunicorn (gevent workers, web/gunicorn_conf.py).

    A request's headers must arrive within LEDGER_HEADER_TIMEOUT seconds and
    its body within LEDGER_BODY_TIMEOUT seconds (default 5 each; then the
    connection is closed, or 408), so slow clients cannot hold the workers.

    With no LEDGER_DATABASE_URL: starts (or reuses) the embedded cluster,
    migrates it, serves, and stops the cluster on exit if it started it.
    With LEDGER_DATABASE_URL: uses that database as it is (run `ledger migrate` first).
    """
    from ledger_py.migrate import migrate as run_migrations

    settings = _settings(ctx)
    if not localdb.port_is_free(host, port):
        raise click.ClickException(
            f"port {port} on {host} is already in use: choose another with --port or LEDGER_PORT"
        )
    cluster = settings.cluster() if settings.embedded else None
    started_here = False
    webhooks_process: subprocess.Popen[bytes] | None = None
    if cluster is not None:
        started_here = cluster.start(wait_for_lock=60)
    try:
        url = settings.url()
        if cluster is not None:
            done = run_migrations(url)
            click.echo(
                f"database {mask_url(url)}: "
                + (f"migrated ({', '.join(done)})" if done else "up to date")
            )
        elif not _is_migrated(url):
            raise click.ClickException(
                f"the database{_where(url)} has no ledger schema: run `ledger migrate` first"
            )
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        if demo:
            _demo_key(settings, url, base)
        if dispatcher:
            webhooks_process = _start_dispatcher(url, settings.log_level)
            click.echo(
                f"webhook dispatcher running (pid {webhooks_process.pid}); "
                "`ledger webhooks add APP URL` registers an endpoint"
            )
        click.echo(f"serving {base}  (docs: {base}/docs, health: {base}/health); Ctrl-C stops")
        status = _run_gunicorn(url, host, port, workers, pool_size, settings.log_level)
    finally:
        if webhooks_process is not None:
            _stop_dispatcher(webhooks_process)
        if started_here and cluster is not None:
            cluster.stop(wait_for_lock=60)
            click.echo("embedded PostgreSQL stopped (data kept)")
    if status not in (0, -signal.SIGINT, -signal.SIGTERM):
        raise click.ClickException(f"gunicorn exited with status {status}")


def _start_dispatcher(url: str, level: str) -> subprocess.Popen[bytes]:
    """`ledger webhooks run` in a child process on the database being served."""
    env = dict(os.environ, LEDGER_DATABASE_URL=url, LEDGER_LOG_LEVEL=level)
    return subprocess.Popen([sys.executable, "-m", "ledger_cli", "webhooks", "run"], env=env)


def _stop_dispatcher(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (it finishes the attempts in flight and records them), then SIGKILL
    if it has not ended in 30 s: its leases run out and another dispatcher takes over."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _run_gunicorn(url: str, host: str, port: int, workers: int, pool_size: int, level: str) -> int:
    """Run gunicorn in a child process until it ends; SIGTERM/SIGINT are passed on to it."""
    env = dict(
        os.environ, LEDGER_DATABASE_URL=url, LEDGER_POOL_SIZE=str(pool_size), LEDGER_LOG_LEVEL=level
    )
    command = [sys.executable, "-m", "gunicorn"]
    if importlib.util.find_spec("web.gunicorn_conf") is not None:
        command += ["--config", "python:web.gunicorn_conf"]
    else:
        command += ["--access-logfile", "-", "--graceful-timeout", "10"]
    # Given on the command line, these override the config module's values.
    command += ["--bind", f"{host}:{port}", "--workers", str(workers), "--log-level", level]
    if _gunicorn_knows("--no-control-socket"):
        # gunicorn >= 24 opens a control socket at one path per user
        # (~/.gunicorn/gunicorn.ctl): two servers would take it from each other.
        command.append("--no-control-socket")
    command.append(_wsgi_target())
    child = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # pragma: no cover - the handler above takes SIGINT
                child.send_signal(signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _is_migrated(url: str, table: str = "ledger.entries") -> bool:
    """Reach the database now (a clear error here beats failing workers) and look for the schema."""
    import psycopg


    with psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _gunicorn_knows(option: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped,unused-ignore]

    return any(option in (setting.cli or ()) for setting in KNOWN_SETTINGS)


def _demo_key(settings: Settings, url: str, base: str) -> None:
    """Give example_app an API key once; print it (kept in the data folder) and a curl line."""
    saved = Path(settings.data_dir) / f"{DEMO_APP}.key" if settings.embedded else None
    with _open_ledger(url) as ledger:
        active = [k for k in ledger.list_api_keys() if k.app == DEMO_APP and k.active]
        token = None
        if saved is not None and saved.exists():
            key_id, _, stored = saved.read_text().strip().partition(" ")
            if any(k.key_id == key_id for k in active):
                token = stored
        if token is None and active:
            ids = ", ".join(k.key_id for k in active)
            click.echo(
                f"{DEMO_APP} already has an API key ({ids}); its token was shown when it was "
                f"created. `ledger keys create {DEMO_APP}` makes another."
            )
            return
        if token is None:
            created = tokens.create_api_key(ledger, app=DEMO_APP)
            token = created.token
            click.echo(f"created API key {created.key_id} for {DEMO_APP}")
            if saved is not None:
                saved.write_text(f"{created.key_id} {token}\n")
                saved.chmod(0o600)
    click.echo(f"\nAPI key for {DEMO_APP}: {token}\nTry it:\n")
    click.echo(f"  export LEDGER_TOKEN={token}")
    click.echo(
        f'  curl -s -X POST {base}/ledger -H "Authorization: Bearer $LEDGER_TOKEN" \\\n'
        f"       -H 'Idempotency-Key: signup-alice' -H 'Content-Type: application/json' \\\n"
        f'       -d \'{{"owner_id": "alice", "operation": "SIGNUP_CREDIT"}}\''
    )
    click.echo(f'  curl -s {base}/balance/alice -H "Authorization: Bearer $LEDGER_TOKEN"\n')


# -- ledger console -------------------------------------------------------------


@cli.group()
def console() -> None:
    """Users of the operators' console at /console (operator: corrects; viewer: reads)."""


@console.command("add-user")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["operator", "viewer"]),
    required=True,
    help="operator: may grant, void, reverse and release; viewer: sees everything, changes nothing",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="read the password from the first line of standard input instead of a prompt",
)
@click.pass_context
def console_add_user(ctx: click.Context, name: str, role: str, password_stdin: bool) -> None:
    """Add console user NAME, or give it a new role and password (its failed sign-ins cleared)."""
    from web.console.passwords import MIN_PASSWORD_LENGTH, hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.UsageError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    with _open_ledger(_settings(ctx).url()) as ledger:
        user = ledger.set_console_user(name=name, role=role, password_hash=hash_password(password))
    click.echo(f"console user {user.name}: {user.role}")


@console.command("remove-user")
@click.argument("name")
@click.pass_context
def console_remove_user(ctx: click.Context, name: str) -> None:
    """Remove console user NAME: its sessions end at their next request."""
    with _open_ledger(_settings(ctx).url()) as ledger:
        removed = ledger.remove_console_user(name=name)
    if not removed:
        raise click.ClickException(f"no console user {name}")
    click.echo(f"removed console user {name}")


@console.command("list-users")
@json_option
@click.pass_context
def console_list_users(ctx: click.Context, as_json: bool) -> None:
    """List console users (never their password hashes)."""
    with _open_ledger(_settings(ctx).url()) as ledger:
        found = ledger.list_console_users()
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no console users yet: `ledger console add-user NAME --role operator` makes one")
        return
    for user in found:
        click.echo(f"{user.name:<30} {user.role:<9} failed sign-ins: {user.failed_count}")


# -- ledger keys --------------------------------------------------------------


@cli.group()
def keys() -> None:
    """HTTP API keys: each app has its own (several at once, for rotation)."""


@keys.command("create")
@click.argument("app")
@click.option(
    "--label", default=None, help="A note kept with the key (e.g. which service uses it)."
)
@click.option(
    "--scope",
    type=click.Choice(["app", "audit"]),
    default="app",
    show_default=True,
    help="app: acts for APP, other apps' metadata and idempotency keys hidden;"
    " audit: reads everything, writes nothing.",
)
@click.pass_context
def keys_create(ctx: click.Context, app: str, label: str | None, scope: str) -> None:
    """Create an API key for APP and print its token (shown only this once)."""
    with _open_ledger(_settings(ctx).url()) as ledger:
        created = tokens.create_api_key(ledger, app=app, label=label, scope=scope)
    click.echo(f"key_id: {created.key_id}\ntoken:  {created.token}")
    click.echo(
        "Keep the token now: only its hash is stored. Use it as `Authorization: Bearer <token>`.",
        err=True,
    )


@keys.command("list")
@json_option
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """List API keys (never their tokens)."""
    with _open_ledger(_settings(ctx).url()) as ledger:
        found = ledger.list_api_keys()
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no API keys yet: `ledger keys create APP` makes one")
        return
    click.echo(
        f"{'KEY_ID':<22} {'APP':<20} {'SCOPE':<6} {'CREATED (UTC)':<20} {'REVOKED (UTC)':<20} LABEL"
    )
    for key in found:
        click.echo(
            f"{key.key_id:<22} {key.app:<20} {key.scope:<6} {_time(key.created_at):<20} "
            f"{_time(key.revoked_at) or '-':<20} {key.label or ''}".rstrip()
        )


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke an API key: requests with it are refused from now on."""
    with _open_ledger(_settings(ctx).url()) as ledger:
        revoked = ledger.revoke_api_key(key_id=key_id)
    if not revoked:
        raise click.ClickException(f"no active API key {key_id!r} (unknown or already revoked)")
    click.echo(f"revoked {key_id}")


# -- ledger balance / post / history / verify ---------------------------------


@cli.command()
@click.argument("owner")
@json_option
@click.pass_context
def balance(ctx: click.Context, owner: str, as_json: bool) -> None:
    """Show OWNER's balance, held credits and available credits."""
    with _open_ledger(_settings(ctx).url()) as ledger:
        result = ledger.get_balance(owner_id=owner)
    if as_json:
        _echo_json(result)
        return
    click.echo(
        f"{owner}: balance {result.balance}, held {result.held}, available {result.available}"
    )


@cli.command()
@click.argument("owner")
@click.argument("operation")
@click.option("--amount", type=AsciiInt(), default=None, help="Amount (default: the operation's).")
@click.option(
    "--key",
    "idempotency_key",
    default=None,
    help="Idempotency key (default: a new one, printed so the call can be retried).",
)
@click.option("--app", default="core", show_default=True, help="App the entry is written for.")
@click.option(
    "--metadata", default=None, metavar="JSON", help="A JSON object stored with the entry."
)
@json_option
@click.pass_context
def post(
    ctx: click.Context,
    owner: str,
    operation: str,
    amount: int | None,
    idempotency_key: str | None,
    app: str,
    metadata: str | None,
    as_json: bool,
) -> None:
    """Write one entry of OPERATION for OWNER (the operation decides credit or debit)."""
    key = idempotency_key or f"cli-{uuid.uuid4()}"
    # The wrapper sends a value as JSON; the database decides what it accepts.
    try:
        parsed = None if metadata is None else json.loads(metadata)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="--metadata") from None
    with (
        _open_ledger(_settings(ctx).url()) as ledger,
        _options_named({"amount": "--amount", "idempotency_key": "--key", "app": "--app"}),
    ):
        entry = ledger.post_entry(
            owner_id=owner,
            app=app,
            operation=operation,
            idempotency_key=key,
            amount=amount,
            metadata=parsed,
        )
    if as_json:
        _echo_json(entry)
        return
    replay = " (replay: nothing written)" if entry.replayed else ""
    click.echo(
        f"entry {entry.entry_id}: {_signed(entry.amount)} {app}/{operation} for {owner}, "
        f"balance {entry.balance}{replay}"
    )
    if idempotency_key is None:
        click.echo(f"idempotency key: {key}", err=True)


@cli.command()
@click.argument("owner")
@click.option(
    "--limit",
    type=AsciiInt(),
    default=20,
    show_default=True,
    help="How many entries, newest first (the database sets the most it returns).",
)
@click.option(
    "--before",
    "after_id",
    type=AsciiInt(),
    default=None,
    metavar="ENTRY_ID",
    help="Only entries older than this one (to page back).",
)
@json_option
@click.pass_context
def history(
    ctx: click.Context, owner: str, limit: int, after_id: int | None, as_json: bool
) -> None:
    """OWNER's entries, newest first."""
    with (
        _open_ledger(_settings(ctx).url()) as ledger,
        _options_named({"after_id": "--before", "max_rows": "--limit"}),
    ):
        entries = list(ledger.list_entries(owner_id=owner, after_id=after_id, max_rows=limit))
    if as_json:
        _echo_json(entries)
        return
    if not entries:
        click.echo(f"no entries for {owner}")
        return
    click.echo(
        f"{'ENTRY':>8}  {'TIME (UTC)':<19}  {'APP/OPERATION':<32} {'AMOUNT':>10} {'BALANCE':>10}"
    )
    for e in entries:
        click.echo(
            f"{e.entry_id:>8}  {_time(e.created_at):<19}  {e.app + '/' + e.operation:<32} "
            f"{_signed(e.amount):>10} {e.balance:>10}"
        )
    if len(entries) == limit:
        click.echo(f"(more: ledger history {owner} --before {entries[-1].entry_id})")


# -- ledger grants ------------------------------------------------------------


class Rfc3339(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """An instant written as RFC 3339 with its offset (2030-01-31T12:00:00Z,
    ...+02:00): a time without one would mean whatever the session's time
    zone is."""

    name = "timestamp"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime.datetime):
            return value
        text = str(value).strip()
        # datetime.fromisoformat takes the Z suffix only from Python 3.11 on.
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not an RFC 3339 timestamp (2030-01-31T12:00:00Z)", param, ctx)
        if parsed.tzinfo is None:
            self.fail(f"{value!r} has no offset: add Z (UTC) or one such as +02:00", param, ctx)
        return parsed


@cli.group()
def grants() -> None:
    """Credit grants: what is left of each, granting, voiding, expiring."""


@grants.command("list")
@click.argument("owner")
@click.option(
    "--all", "include_closed", is_flag=True, help="Also the spent, expired and voided grants."
)
@json_option
@click.pass_context
def grants_list(ctx: click.Context, owner: str, include_closed: bool, as_json: bool) -> None:
    """OWNER's grants: the active ones in the order debits spend them."""
    with _open_ledger(_settings(ctx).url()) as ledger:
        found = ledger.list_grants(owner_id=owner, include_closed=include_closed or None)
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo(f"no {'' if include_closed else 'active '}grants for {owner}")
        return
    click.echo(
        f"{'GRANT':>8} {'ENTRY':>8}  {'APP/OPERATION':<32} {'AMOUNT':>10} {'REMAINING':>10} "
        f"{'PRIO':>5}  {'EXPIRES (UTC)':<19}  STATUS"
    )
    for g in found:
        click.echo(
            f"{g.grant_id:>8} {g.entry_id if g.entry_id is not None else '-':>8}  "
            f"{g.app + '/' + g.operation:<32} {g.amount:>10} {g.remaining:>10} "
            f"{g.priority:>5}  {_time(g.expires_at) or 'never':<19}  {g.status}"
        )


@grants.command("grant")
@click.argument("owner")
@click.option("--app", required=True, help="The app the grant is made for.")
@click.option("--operation", required=True, help="A credit operation (e.g. PROMO_CREDIT).")
@click.option("--key", "idempotency_key", required=True, help="Idempotency key.")
@click.option("--amount", type=AsciiInt(), default=None, help="Amount (default: the operation's).")
@click.option(
    "--expires-at",
    type=Rfc3339(),
    default=None,
    help="When its credits lapse, RFC 3339 with an offset (default: the operation's expiry;"
    " never later than the operation allows).",
)
@click.option(
    "--priority",
    type=AsciiInt(),
    default=None,
    help="0 to 1000, lower is spent first (default: the operation's).",
)
@json_option
@click.pass_context
def grants_grant(
    ctx: click.Context,
    owner: str,
    app: str,
    operation: str,
    idempotency_key: str,
    amount: int | None,
    expires_at: datetime.datetime | None,
    priority: int | None,
    as_json: bool,
) -> None:
    """Grant OWNER credits of a credit OPERATION, with an expiry and a priority."""
    with (
        _open_ledger(_settings(ctx).url()) as ledger,
        _options_named(
            {
                "amount": "--amount",
                "idempotency_key": "--key",
                "app": "--app",
                "expires_at": "--expires-at",
                "priority": "--priority",
            }
        ),
    ):
        entry = ledger.grant_credits(
            owner_id=owner,
            app=app,
            operation=operation,
            idempotency_key=idempotency_key,
            amount=amount,
            expires_at=expires_at,
            priority=priority,
        )
    if as_json:
        _echo_json(entry)
        return
    replay = " (replay: nothing written)" if entry.replayed else ""
    click.echo(
        f"entry {entry.entry_id}: {_signed(entry.amount)} {app}/{operation} for {owner}, "
        f"balance {entry.balance}{replay}"
    )


@grants.command("void")
@click.argument("grant_id", type=AsciiInt(min=1))
@click.option("--app", required=True, help="The app that made the grant.")
@click.option("--key", "idempotency_key", required=True, help="Idempotency key.")
@click.option("--reason", default=None, help="Why, kept with the VOID entry.")
@click.option(
    "--owner", "owner_id", default=None, help="The grant's owner, when known (a direct lookup)."
)
@json_option
@click.pass_context
def grants_void(
    ctx: click.Context,
    grant_id: int,
    app: str,
    idempotency_key: str,
    reason: str | None,
    owner_id: str | None,
    as_json: bool,
) -> None:
    """Void what is left of GRANT_ID (what was spent stays spent)."""
    with (
        _open_ledger(_settings(ctx).url()) as ledger,
        _options_named({"idempotency_key": "--key", "app": "--app", "owner_id": "--owner"}),
    ):
        entry = ledger.void_grant(
            grant_id=grant_id,
            app=app,
            idempotency_key=idempotency_key,
            reason=reason,
            owner_id=owner_id,
        )
    if as_json:
        _echo_json(entry)
        return
    replay = " (replay: nothing written)" if entry.replayed else ""
    click.echo(
        f"grant {grant_id} voided: entry {entry.entry_id} {_signed(entry.amount)} for "
        f"{entry.owner_id}, balance {entry.balance}{replay}"
    )


@grants.command("expire")
@click.option(
    "--max-rows",
    type=AsciiInt(min=1),
    default=None,
    help="Grants per call (default: the database's).",
)
@click.option(
    "--loop",
    "interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Run again every SECONDS until SIGINT or SIGTERM (which finish the current call).",
)
@click.pass_context
def grants_expire(ctx: click.Context, max_rows: int | None, interval: float | None) -> None:
    """Write the EXPIRE entries of grants past their expiry.

    Their credits are already gone for every reader; this writes the entries
    that say so. Owners busy with a write are skipped (their next write
    expires their grants itself), so it never waits on them; several of
    these may run at once. Without --loop one call (at most --max-rows
    grants); with --loop, each round calls until nothing is due, prints how
    many it expired, then waits SECONDS.
    """
    url = _settings(ctx).url()
    if interval is None:
        with (
            _open_ledger(url) as ledger,
            _options_named({"max_rows": "--max-rows"}),
        ):
            count = ledger.expire_grants(max_rows=max_rows)
        click.echo(f"expired {count} grant{'' if count == 1 else 's'}")
        return
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with (
            _open_ledger(url) as ledger,
            _options_named({"max_rows": "--max-rows"}),
        ):
            click.echo(f"expiring grants every {interval:g} s; SIGINT or SIGTERM stops")
            while not stop.is_set():
                total = 0
                while not stop.is_set():
                    count = ledger.expire_grants(max_rows=max_rows)
                    total += count
                    if count == 0:
                        break
                stamp = _time(datetime.datetime.now(datetime.timezone.utc))
                click.echo(f"{stamp}  expired {total} grant{'' if total == 1 else 's'}")
                stop.wait(interval)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped")


# -- ledger webhooks / ledger events -------------------------------------------


_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A length of time: a number of seconds, or a number with a unit s, m,
    h or d (90, 90s, 15m, 12h, 3d)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime.timedelta):
            return value
        found = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)", str(value).strip())
        if found is None:
            self.fail(f"{value!r} is not a duration (e.g. 90s, 15m, 12h, 3d)", param, ctx)
        seconds = float(found[1]) * _SECONDS_PER_UNIT[found[2] or "s"]
        if seconds > 100 * 365 * 86400:
            self.fail(f"{value!r} is longer than 100 years", param, ctx)
        return datetime.timedelta(seconds=seconds)


@cli.group()
def webhooks() -> None:
    """Webhook endpoints of apps, their delivery log, and the dispatcher that sends events."""


def _endpoint_line(endpoint: Any) -> str:
    types = ",".join(endpoint.event_types) if endpoint.event_types else "every event type"
    state = "active" if endpoint.active else f"disabled since {_time(endpoint.disabled_at)}"
    note = f"  ({endpoint.description})" if endpoint.description else ""
    return (
        f"{endpoint.endpoint_id:>6}  {endpoint.app:<20} {state:<8}  {endpoint.url}  [{types}]{note}"
    )


def _endpoint_app(ledger: Ledger, endpoint_id: int, app: str | None) -> str:
    """The app an endpoint belongs to (--app when given: it must be that app's)."""
    with _options_named({"endpoint_id": "ENDPOINT_ID", "app": "--app"}):
        return ledger.get_webhook_endpoint(endpoint_id=endpoint_id, app=app).app


@webhooks.command("add")
@click.argument("app")
@click.argument("url")
@click.option(
    "--event",
    "event_types",
    multiple=True,
    metavar="TYPE",
    help="Send only this event type (repeat for several; default: every type).",
)
@click.option("--description", default=None, help="A note kept with the endpoint.")
@json_option
@click.pass_context
def webhooks_add(
    ctx: click.Context,
    app: str,
    url: str,
    event_types: tuple[str, ...],
    description: str | None,
    as_json: bool,
) -> None:
    """Register URL to receive APP's events; print its signing secret (shown only this once)."""
    with (
        _open_ledger(_settings(ctx).url()) as ledger,
        _options_named({"url": "URL", "event_types": "--event", "description": "--description"}),
    ):
        created = ledger.create_webhook_endpoint(
            app=app, url=url, event_types=list(event_types) or None, description=description
        )
    if as_json:
        _echo_json(dict(_plain(created), secret=created.secret))
    else:
        click.echo(f"endpoint {created.endpoint_id}: {_endpoint_line(created).strip()}")
        click.echo(f"secret:  {created.secret}")
    click.echo(
        "Keep the secret now: it is not shown again. Receivers check each request's "
        "webhook-signature with it (README, Webhooks).",
        err=True,
    )


@webhooks.command("list")
@click.option("--app", default=None, help="Only this app's endpoints.")
@json_option
@click.pass_context
def webhooks_list(ctx: click.Context, app: str | None, as_json: bool) -> None:
    """List webhook endpoints (never their secrets)."""
    with _open_ledger(_settings(ctx).url()) as ledger, _options_named({"app": "--app"}):
        found = ledger.list_webhook_endpoints(app=app)
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no webhook endpoints yet: `ledger webhooks add APP URL` registers one")
        return
    click.echo(f"{'ID':>6}  {'APP':<20} {'STATE':<8}  URL  [EVENT TYPES]")
    for endpoint in found:
        click.echo(_endpoint_line(endpoint))


def _set_active(ctx: click.Context, endpoint_id: int, app: str | None, active: bool) -> None:
    with _open_ledger(_settings(ctx).url()) as ledger:
        owner = _endpoint_app(ledger, endpoint_id, app)
        endpoint = ledger.set_webhook_endpoint_active(
            endpoint_id=endpoint_id, app=owner, active=active
        )
    click.echo(f"endpoint {endpoint.endpoint_id} {'enabled' if endpoint.active else 'disabled'}")


_app_of_endpoint = click.option(
    "--app", default=None, help="The endpoint's app (default: whichever it is)."
)


@webhooks.command("remove")
@click.argument("endpoint_id", type=AsciiInt(min=1))
@_app_of_endpoint
@click.pass_context
def webhooks_remove(ctx: click.Context, endpoint_id: int, app: str | None) -> None:
    """Delete an endpoint, its pending deliveries and its delivery log."""
    with _open_ledger(_settings(ctx).url()) as ledger:
        owner = _endpoint_app(ledger, endpoint_id, app)
        gone = ledger.delete_webhook_endpoint(endpoint_id=endpoint_id, app=owner)
    click.echo(f"removed endpoint {gone.endpoint_id} ({gone.app}: {gone.url})")


@webhooks.command("disable")
@click.argument("endpoint_id", type=AsciiInt(min=1))
@_app_of_endpoint
@click.pass_context
def webhooks_disable(ctx: click.Context, endpoint_id: int, app: str | None) -> None:
    """Stop sending to an endpoint (its pending deliveries wait; `enable` resumes)."""
    _set_active(ctx, endpoint_id, app, False)


@webhooks.command("enable")
@click.argument("endpoint_id", type=AsciiInt(min=1))
@_app_of_endpoint
@click.pass_context
def webhooks_enable(ctx: click.Context, endpoint_id: int, app: str | None) -> None:
    """Send to a disabled endpoint again, from the event where it stopped."""
    _set_active(ctx, endpoint_id, app, True)


@webhooks.command("log")
@click.argument("endpoint_id", type=AsciiInt(min=1))
@click.option(
    "--status",
    type=click.Choice(["pending", "delivered", "failed"]),
    default=None,
    help="Only deliveries in this state.",
)
@click.option(
    "--attempts",
    is_flag=True,
    help="Every attempt (HTTP status or error, duration) instead of one line per delivery.",
)
@click.option("--event", "event_id", type=AsciiInt(min=1), default=None, help="Only this event.")
@click.option("--limit", type=AsciiInt(), default=20, show_default=True, help="How many lines.")
@json_option
@click.pass_context
def webhooks_log(
    ctx: click.Context,
    endpoint_id: int,
    status: str | None,
    attempts: bool,
    event_id: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """An endpoint's delivery log, newest first."""
    with (
        _open_ledger(_settings(ctx).url()) as ledger,
        _options_named({"max_rows": "--limit", "endpoint_id": "ENDPOINT_ID"}),
    ):
        if attempts or event_id is not None:
            rows: list[Any] = ledger.list_webhook_attempts(
                endpoint_id=endpoint_id, event_id=event_id, max_rows=limit
            )
        else:
            rows = ledger.list_webhook_deliveries(
                endpoint_id=endpoint_id, status=status, max_rows=limit
            )
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"nothing in the log of endpoint {endpoint_id}")
        return
    if attempts or event_id is not None:
        click.echo(f"{'TIME (UTC)':<19}  {'EVENT':>8} {'TRY':>3}  {'OUTCOME':<9} {'MS':>6}  RESULT")
        for a in rows:
            result = a.error or f"HTTP {a.status_code}"
            click.echo(
                f"{_time(a.attempted_at):<19}  {a.event_id:>8} {a.attempt:>3}  {a.outcome:<9} "
                f"{a.duration_ms if a.duration_ms is not None else '':>6}  {result}"
            )
        return
    click.echo(f"{'EVENT':>8}  {'TYPE':<24} {'STATUS':<9} {'TRIES':>5}  {'LAST (UTC)':<19}  RESULT")
    for d in rows:
        if d.leased_until is not None:
            result = "attempt in flight"
        elif d.status == "delivered":
            result = f"HTTP {d.last_status_code}"
        elif d.status == "pending" and d.attempts:
            result = f"{d.last_error}; next try {_time(d.next_attempt_at)}"
        else:
            result = d.last_error or ""
        click.echo(
            f"{d.event_id:>8}  {d.event_type:<24} {d.status:<9} {d.attempts:>5}  "
            f"{_time(d.last_attempt_at):<19}  {result}".rstrip()
        )


@webhooks.command("resend")
@click.argument("event_id", type=AsciiInt(min=1))
@click.option(
    "--endpoint", "endpoint_id", type=AsciiInt(min=1), default=None, help="Only to this endpoint."
)
@click.option("--app", default=None, help="Only to this app's endpoints.")
@click.pass_context
def webhooks_resend(
    ctx: click.Context, event_id: int, endpoint_id: int | None, app: str | None
) -> None:
    """Send EVENT_ID again to the endpoints it was sent to (delivered, failed or pending).

    Each such delivery is due now, with a new horizon, under the same
    webhook-id. An attempt in flight is left to finish."""
    from ledger_py.errors import NotFound

    with _open_ledger(_settings(ctx).url()) as ledger:
        if endpoint_id is not None:
            apps = [_endpoint_app(ledger, endpoint_id, app)]
        elif app is not None:
            apps = [app]
        else:
            apps = sorted({e.app for e in ledger.list_webhook_endpoints()})
        resent = []
        for owner in apps:
            try:
                resent += ledger.resend_webhook_event(
                    event_id=event_id, app=owner, endpoint_id=endpoint_id
                )
            except NotFound:
                if len(apps) == 1:
                    raise
    if not resent:
        raise click.ClickException(f"event {event_id} was not sent to any webhook endpoint")
    for d in resent:
        click.echo(f"event {event_id} to endpoint {d.endpoint_id}: due now ({d.webhook_id})")


@webhooks.command("run")
@click.option(
    "--poll-interval",
    envvar="LEDGER_WEBHOOK_POLL_INTERVAL",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between polls when nothing is due [env LEDGER_WEBHOOK_POLL_INTERVAL].",
)
@click.option(
    "--timeout",
    envvar="LEDGER_WEBHOOK_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Bound of one attempt, answer included [env LEDGER_WEBHOOK_TIMEOUT].",
)
@click.option(
    "--lease",
    envvar="LEDGER_WEBHOOK_LEASE",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a claimed delivery is this dispatcher's (more than --timeout): a dispatcher "
    "that dies leaves its deliveries to others after it [env LEDGER_WEBHOOK_LEASE].",
)
@click.option(
    "--concurrency",
    envvar="LEDGER_WEBHOOK_CONCURRENCY",
    type=AsciiInt(1, 1000),
    default=64,
    show_default=True,
    help="Attempts in flight at once [env LEDGER_WEBHOOK_CONCURRENCY].",
)
@click.option(
    "--per-endpoint",
    envvar="LEDGER_WEBHOOK_PER_ENDPOINT",
    type=AsciiInt(1, 1000),
    default=8,
    show_default=True,
    help="One endpoint's share: claimed at most this many at a time, none while this many are "
    "in flight [env LEDGER_WEBHOOK_PER_ENDPOINT].",
)
@click.option(
    "--backoff-base",
    envvar="LEDGER_WEBHOOK_BACKOFF_BASE",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Delay after a first failed attempt; it doubles with each failure, with jitter "
    "[env LEDGER_WEBHOOK_BACKOFF_BASE].",
)
@click.option(
    "--backoff-max",
    envvar="LEDGER_WEBHOOK_BACKOFF_MAX",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest delay between two attempts [env LEDGER_WEBHOOK_BACKOFF_MAX].",
)
@click.option(
    "--horizon",
    envvar="LEDGER_WEBHOOK_HORIZON",
    type=Duration(),
    default=None,
    help="Give a delivery up (failed) when its next try would come later than this after it "
    "was created or resent [env LEDGER_WEBHOOK_HORIZON; default 3d].",
)
@click.pass_context
def webhooks_run(
    ctx: click.Context,
    poll_interval: float,
    timeout: float,
    lease: float,
    concurrency: int,
    per_endpoint: int,
    backoff_base: float,
    backoff_max: float,
    horizon: datetime.timedelta | None,
) -> None:
    """Deliver events to the webhook endpoints until SIGTERM or SIGINT.

    Each tick relays committed events into the feed, fans new ones out to
    the endpoints, claims due deliveries and POSTs each one, signed per
    Standard Webhooks. Run as many as you like, on any hosts: they share
    the work and never attempt one delivery twice at once. On SIGTERM it
    stops claiming, lets the attempts in flight finish and records them.
    """
    from ledger_cli import dispatcher

    try:
        config = dispatcher.DispatcherConfig(
            poll_interval=poll_interval,
            timeout=timeout,
            lease=lease,
            concurrency=concurrency,
            per_endpoint=min(per_endpoint, concurrency),
            backoff_base=backoff_base,
            backoff_max=max(backoff_max, backoff_base),
            horizon=horizon,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    url = _settings(ctx).url()
    if not _is_migrated(url, "ledger.webhook_endpoints"):
        raise click.ClickException(
            f"the database{_where(url)} has no webhook tables: run `ledger migrate` first"
        )
    click.echo(
        f"dispatching webhooks from {mask_url(url)} ({concurrency} at once, polling every "
        f"{poll_interval:g} s); SIGINT or SIGTERM stops",
        err=True,
    )
    stats = dispatcher.run(url, config)
    click.echo(
        f"stopped: {stats.claimed} attempts, {stats.delivered} delivered, "
        f"{stats.failed_attempts} failed",
        err=True,
    )


@cli.group()
def events() -> None:
    """The event feed: retention."""


@events.command("prune")
@click.option(
    "--older-than",
    type=Duration(),
    default=None,
    help="The retention window (default: the database's, 30 days).",
)
@click.option(
    "--batch",
    type=AsciiInt(min=1),
    default=1000,
    show_default=True,
    help="Rows per transaction.",
)
@click.pass_context
def events_prune(ctx: click.Context, older_than: datetime.timedelta | None, batch: int) -> None:
    """Delete events and finished webhook deliveries older than the window.

    In small transactions (--batch rows each), so writers and readers never
    wait long. Kept however old: events not relayed yet, events an active
    webhook endpoint has not fanned out yet, pending deliveries. A cursor
    reader must read within the window.
    """
    with (
        _open_ledger(_settings(ctx).url()) as ledger,
        _options_named({"older_than": "--older-than", "max_rows": "--batch"}),
    ):
        pruned = {"events": 0, "webhook deliveries": 0}
        for name, prune in (
            ("events", ledger.prune_events),
            ("webhook deliveries", ledger.prune_webhook_deliveries),
        ):
            while True:
                done = prune(older_than=older_than, max_rows=batch)
                pruned[name] += done
                if done < batch:
                    break
    click.echo(
        f"pruned {pruned['events']} events and {pruned['webhook deliveries']} webhook deliveries"
    )


@cli.command()
@json_option
@click.option(
    "--record",
    is_flag=True,
    help="record the run (ledger.record_verify(): the console's overview shows the latest); "
    "prints the first 20 findings",
)
@click.pass_context
def verify(ctx: click.Context, as_json: bool, record: bool) -> None:
    """Check the ledger's invariants; exit status 1 if any discrepancy is found."""
    url = _settings(ctx).url()
    if record:
        with _open_ledger(url, statement_timeout=None) as ledger:
            run = ledger.record_verify()
        if as_json:
            _echo_json(run)
        else:
            click.echo(
                f"recorded verify run {run.run_id}: "
                + (f"{run.findings} discrepancies" if run.findings else "no discrepancy")
            )
            for row in run.sample:
                click.echo(f"{row['check_name']}: {row['owner_id']}: {row['detail']}")
        if run.findings:
            ctx.exit(1)
        return
    estimate = _estimated_entries(url)
    with _open_ledger(url, statement_timeout=None) as ledger:
        if estimate >= VERIFY_PROGRESS_THRESHOLD and not as_json:
            found = _with_progress(
                lambda: list(ledger.verify()), f"verifying ~{estimate:,} entries"
            )
        else:
            found = list(ledger.verify())
    if as_json:
        _echo_json(found)
    elif not found:
        click.echo("ledger verified: no discrepancy")
    else:
        for row in found:
            click.echo(f"{row.check_name}: {row.owner_id}: {row.detail}")
    if found:
        ctx.exit(1)


def _estimated_entries(url: str) -> int:
    """The planner's row estimate of ledger.entries: instant, good enough to choose a display."""
    import psycopg


    with psycopg.connect(libpq_url(url), connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class "
            "WHERE oid = to_regclass('ledger.entries')"
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _with_progress(work: Any, label: str) -> Any:
    """Run work() in a thread while an (indeterminate) progress bar moves; return its result."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def ticks() -> Iterator[int]:
        n = 0
        while thread.is_alive():
            thread.join(0.2)
            n += 1
            yield n

    with click.progressbar(ticks(), label=label, file=sys.stderr, show_eta=False) as bar:
        for _ in bar:
            pass
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point (`ledger`)."""
    cli.main(args=argv, prog_name="ledger")
    raise SystemExit(0)  # pragma: no cover - cli.main always exits


if __name__ == "__main__":  # pragma: no cover
    main()
