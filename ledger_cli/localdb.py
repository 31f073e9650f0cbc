"""An embedded PostgreSQL cluster under a data folder, for `ledger db` and `ledger serve`.

The installed server programs (initdb, pg_ctl) make and run it; as root they
run as an unprivileged user through `ledger_cli.pgserver`.
Layout of the data folder (LEDGER_DATA_DIR, default ./data):

    pg/                  the cluster (initdb -E UTF8 --locale=C)
    run/                 its Unix socket directory (-k), reachable by the server user only
    postgres.log         the server log
    superuser.password   password of the `postgres` role for TCP connections (mode 0600)
    .lock                held while a `ledger` process starts or stops the cluster

The server listens on 127.0.0.1 only, on a port of its own (LEDGER_DB_PORT,
default 54329, not 5432 so that it never collides with a system server).
TCP connections need the generated password; the socket trusts whoever can
reach the socket folder.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ledger_cli import pgserver

DEFAULT_PORT = 54329
DEFAULT_DATA_DIR = "data"
DATABASE = "ledger"
SUPERUSER = "postgres"
LISTEN_HOST = "127.0.0.1"
# Unix socket paths are limited to ~107 bytes; ".s.PGSQL.NNNNN" takes 15 of them.
_MAX_SOCKET_DIR = 90
# As root, when the server user cannot reach the data folder (say it is under
# /root, mode 0700), the server's files go to a folder of their own here.
SERVER_FALLBACK_ROOT = Path("/var/lib/ledger-embedded")


class LocalDbError(RuntimeError):
    """A failure of the embedded cluster, with a message meant for a person."""


class ClusterBusy(LocalDbError):
    """Another process is starting or stopping the same cluster right now."""


class PortInUse(LocalDbError):
    """The cluster's port is taken by another program."""


class DataDirUnreachable(LocalDbError):
    """Running as root, the server user cannot reach the data folder."""


class StartFailed(LocalDbError):
    """initdb or pg_ctl failed; the message quotes the reason from its output or log."""


@dataclass(frozen=True)
class ClusterStatus:
    data_dir: Path
    initialized: bool
    running: bool
    pid: int | None
    port: int
    socket_dir: Path
    server_dir: Path  # the data folder, unless relocated (see LocalCluster.relocated_because)


def port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind host:port now (SO_REUSEADDR, as servers bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


# Right after a crash the killed server's listening socket can outlive its
# pid for a moment (its processes are still exiting): wait this long.
PORT_RELEASE_SECONDS = 5.0


def _wait_for_free_port(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not port_is_free(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _is_postgres(pid: int) -> bool:
    """Whether pid is a PostgreSQL server (not a recycled pid). Unknown: assume yes."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _pid_alive(pid)
    except OSError:
        return True
    return b"postgres" in cmdline or b"postmaster" in cmdline


class LocalCluster:
    """One local cluster: init, start, stop, status, and the URL to reach it.

    start() and stop() are safe to call when already started/stopped, and
    refuse (ClusterBusy) while another process is doing either on the same
    data folder.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str] | None = None, port: int | None = None
    ) -> None:
        folder = data_dir or os.environ.get("LEDGER_DATA_DIR") or DEFAULT_DATA_DIR
        self.data_dir = Path(folder).expanduser().absolute()
        if port is None:
            raw = os.environ.get("LEDGER_DB_PORT") or str(DEFAULT_PORT)
            try:
                port = int(raw)
            except ValueError:
                raise LocalDbError(f"LEDGER_DB_PORT must be a port number, not {raw!r}") from None
        if not 1 <= port <= 65535:
            raise LocalDbError(f"the database port must be between 1 and 65535, not {port}")
        self.port = port
        self.lock_file = self.data_dir / ".lock"
        # Where the server's own files live: the data folder itself, unless
        # (as root) the server user cannot reach it.
        self.server_dir = self.data_dir
        self.relocated_because: str | None = None
        blocked = _blocking_folder(self.data_dir)
        if blocked is not None:
            digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
            self.server_dir = SERVER_FALLBACK_ROOT / f"{self.data_dir.name}-{digest}"
            self.relocated_because = blocked
            if _blocking_folder(self.server_dir) is not None:
                raise DataDirUnreachable(
                    "the PostgreSQL server runs as an unprivileged user (we are root) and cannot "
                    f"reach the data folder {self.data_dir} ({blocked}) nor "
                    f"{SERVER_FALLBACK_ROOT}: set LEDGER_DATA_DIR to a folder it can reach "
                    "(e.g. under /var/lib or /srv)"
                )
        self.pgdata = self.server_dir / "pg"
        self.log_file = self.server_dir / "postgres.log"
        self.password_file = self.server_dir / "superuser.password"

    # -- where things are -------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        preferred = self.server_dir / "run"
        if len(str(preferred)) <= _MAX_SOCKET_DIR:
            return preferred
        # A deep data folder: a short folder of its own under the temp dir.
        digest = hashlib.sha256(str(self.server_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"ledger-pg-{digest}"

    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def _pid_file(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid, or None when there is none."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return (int(lines[0]) if lines and lines[0].strip().isdigit() else 0), self.port

    def running_pid(self) -> int | None:
        """The postmaster's pid when the cluster runs; None when not (or a stale pid file)."""
        found = self._pid_file()
        if found is None:
            return None
        pid = found[0]
        if pid > 0 and _pid_alive(pid) and _is_postgres(pid):
            return pid
        return None

    def status(self) -> ClusterStatus:
        pid = self.running_pid()
        found = self._pid_file() if pid else None
        port = found[1] if found else self.port
        return ClusterStatus(
            self.data_dir,
            self.initialized,
            pid is not None,
            pid,
            port,
            self.socket_dir,
            self.server_dir,
        )

    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            raise LocalDbError(
                f"no embedded database in {self.data_dir}: create it with `ledger db start`"
            ) from None

    def url(self, database: str = DATABASE) -> str:
        """A libpq URL of the cluster (with the password: mask it before printing)."""
        return f"postgresql://{SUPERUSER}:{self.password()}@{LISTEN_HOST}:{self.status().port}/{database}"

    # -- life cycle -------------------------------------------------------

    def init(self) -> None:
        """Create the cluster if it does not exist yet (initdb -E UTF8)."""
        if self.initialized:
            return
        initdb = pgserver.find_program("initdb")
        self._prepare_folders()
        if self.pgdata.exists():
            # A previous initdb died half-way: it left nothing worth keeping.
            shutil.rmtree(self.pgdata)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.password_file.chmod(0o600)
        pgserver.hand_over(self.server_dir)
        result = self._run(
            [
                initdb,
                "-D",
                str(self.pgdata),
                "-E",
                "UTF8",
                "--locale=C",
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={self.password_file}",
            ]
        )
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise StartFailed(f"initdb failed: {_last_line(result.stderr or result.stdout)}")

    def start(self, wait_for_lock: float = 0.0) -> bool:
        """Start the cluster (creating it first if needed). False if it was running already.

        Recovers from a stale postmaster.pid (a crash) and from a crashed
        server's backends still holding shared memory.
        """
        with self._lock(wait_for_lock):
            if self.initialized:
                if self.running_pid() is not None:
                    return False
                self._remove_stale_pid_file()
            if not _wait_for_free_port(LISTEN_HOST, self.port, PORT_RELEASE_SECONDS):
                raise PortInUse(
                    f"port {self.port} on {LISTEN_HOST} is already in use by another program: "
                    "set LEDGER_DB_PORT (or --db-port) to a free port"
                )
            self.init()
            self._prepare_socket_dir()
            pg_ctl = pgserver.find_program("pg_ctl")
            options = f"-p {self.port} -h {LISTEN_HOST} -k {shlex.quote(str(self.socket_dir))}"
            command = [
                pg_ctl,
                "start",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                options,
            ]
            for _ in range(20):
                log_size = self.log_file.stat().st_size if self.log_file.exists() else 0
                result = self._run(command)
                if result.returncode == 0:
                    break
                reason = self._log_since(log_size) or result.stderr or result.stdout
                # Backends of a killed postmaster exit within moments; wait for them.
                if "shared memory block" in reason:
                    time.sleep(0.5)
                    continue
                if "could not bind" in reason or "Address already in use" in reason:
                    raise PortInUse(
                        f"port {self.port} on {LISTEN_HOST} is already in use: "
                        "set LEDGER_DB_PORT (or --db-port) to a free port"
                    )
                raise StartFailed(
                    f"PostgreSQL did not start: {_last_line(reason)} (log: {self.log_file})"
                )
            else:
                raise StartFailed(
                    "PostgreSQL did not start: a crashed server's processes still hold its shared "
                    f"memory (log: {self.log_file})"
                )
            self._ensure_database()
            return True

    def stop(self, wait_for_lock: float = 0.0) -> bool:
        """Stop the cluster (fast shutdown). False if it was not running."""
        if not self.data_dir.exists():
            return False
        with self._lock(wait_for_lock):
            if self.running_pid() is None:
                self._remove_stale_pid_file()
                return False
            pg_ctl = pgserver.find_program("pg_ctl")
            result = self._run(
                [pg_ctl, "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60"]
            )
            if result.returncode != 0 and self.running_pid() is not None:
                raise LocalDbError(
                    f"pg_ctl stop failed: {_last_line(result.stderr or result.stdout)}"
                )
            return True

    # -- internals --------------------------------------------------------

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        # cwd: the server user may not be able to enter the caller's folder.
        return subprocess.run(
            [*pgserver.command_prefix(), *args],
            capture_output=True,
            text=True,
            cwd=str(self.server_dir),
            stdin=subprocess.DEVNULL,
        )

    def _prepare_folders(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.server_dir != self.data_dir:
            SERVER_FALLBACK_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.server_dir.mkdir(mode=0o755, exist_ok=True)
        (self.server_dir / "run").mkdir(mode=0o700, exist_ok=True)

    def _prepare_socket_dir(self) -> None:
        folder = self.socket_dir
        folder.mkdir(mode=0o700, exist_ok=True)
        user = pgserver.server_user()
        if user is not None and folder.stat().st_uid != user.pw_uid:
            os.chown(folder, user.pw_uid, user.pw_gid)

    def _remove_stale_pid_file(self) -> None:
        """After a crash: drop lock files whose server is gone.

        PostgreSQL removes them itself unless the dead postmaster's pid is
        still taken (an unreaped zombie, or a recycled pid).
        """
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists() and self.running_pid() is None:
            pid_file.unlink()
        socket_lock = self.socket_dir / f".s.PGSQL.{self.port}.lock"
        try:
            holder = int(socket_lock.read_text().splitlines()[0])
        except (OSError, IndexError, ValueError):
            return
        if not (_pid_alive(holder) and _is_postgres(holder)):
            socket_lock.unlink(missing_ok=True)
            (self.socket_dir / f".s.PGSQL.{self.port}").unlink(missing_ok=True)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if "FATAL" in line or "ERROR" in line]
        return "\n".join(lines) or text

    @contextmanager
    def _lock(self, wait: float) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a+") as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "?"
                        raise ClusterBusy(
                            f"another ledger process (pid {holder}) is starting or stopping the "
                            f"database in {self.data_dir}: wait for it to finish and try again"
                        ) from None
                    time.sleep(0.1)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)


def _blocking_folder(path: Path) -> str | None:
    """As root: the first existing folder above path that the server user cannot
    pass through, described (e.g. "/root has mode 0700"); None if all let it through."""
    user = pgserver.server_user()
    if user is None:
        return None
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for folder in reversed(path.parents):
        try:
            info = folder.stat()
        except FileNotFoundError:
            break  # created later by us, searchable by all (umask permitting)
        if info.st_uid == user.pw_uid:
            ok = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid in groups:
            ok = bool(info.st_mode & stat.S_IXGRP)
        else:
            ok = bool(info.st_mode & stat.S_IXOTH)
        if not ok:
            return f"{folder} has mode {stat.S_IMODE(info.st_mode):04o}"
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
