"""Running PostgreSQL server binaries safely, also as root.

initdb, pg_ctl and postgres refuse to run as root. When we are root, every
server command runs through `setpriv` as an unprivileged user (setpriv execs,
so the pid we hold is the server's), and the server's folders are chowned to
that user. Used by the test harness, the benchmarks and `ledger db`.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
from typing import Any

# Where Debian/Ubuntu put the server binaries (they are not on PATH there).
_SEARCH_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/bin")


class PostgresBinariesMissing(RuntimeError):
    def __init__(self, program: str) -> None:
        super().__init__(
            f"PostgreSQL server program {program!r} not found. Install the server, e.g. "
            "`sudo apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql` "
            "(macOS), or put its bin folder on PATH."
        )


def find_program(name: str) -> str:
    """The path of a server program: PATH first, then the usual install folders (newest)."""
    found = shutil.which(name)
    if found:
        return found
    candidates: list[Path] = []
    for pattern in _SEARCH_GLOBS:
        root = Path("/")
        candidates.extend(root.glob(pattern.lstrip("/")))
    for folder in sorted(candidates, key=_version_key, reverse=True):
        program = folder / name
        if program.exists():
            return str(program)
    raise PostgresBinariesMissing(name)


def _version_key(path: Path) -> tuple[int, str]:
    digits = "".join(ch for ch in path.parent.name if ch.isdigit())
    return (int(digits) if digits else 0, str(path))


def server_user() -> pwd.struct_passwd | None:
    """The unprivileged user that runs the server when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("LEDGER_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, but no unprivileged user (postgres, nobody) exists")


def command_prefix() -> list[str]:
    """Prepend to a server command line: setpriv to the server user when root."""
    user = server_user()
    if user is None:
        return []
    return [
        shutil.which("setpriv") or "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
    ]


def hand_over(path: str | os.PathLike[str]) -> None:
    """chown a folder tree to the server user (no-op unless we are root)."""
    user = server_user()
    if user is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def throwaway_server(*, fsync: bool = False, settings: dict[str, str] | None = None) -> Any:
    """Start a throwaway server with testing.postgresql, root-safe.

    fsync=False keeps testing.postgresql's speed default (-F) for tests;
    benchmarks and durability tests pass fsync=True. Extra `settings` become
    `-c name=value` options. Returns the running testing.postgresql object.
    """
    import testing.postgresql

    prefix = command_prefix()
    options = ["-h", "127.0.0.1", "-c", "logging_collector=off", "-c", "max_connections=200"]
    if not fsync:
        options.append("-F")
    for key, value in (settings or {}).items():
        options += ["-c", f"{key}={value}"]

    class RootSafePostgresql(testing.postgresql.Postgresql):  # type: ignore[misc]
        def initialize_database(self) -> None:
            hand_over(self.base_dir)
            data = os.path.join(self.base_dir, "data")
            if not os.path.exists(os.path.join(data, "PG_VERSION")):
                import subprocess

                args = [
                    *prefix,
                    self.initdb,
                    "-D",
                    data,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                ]
                result = subprocess.run(args, capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"initdb failed: {result.stderr.strip()}")

        def get_server_commandline(self) -> list[str]:
            return [*prefix, *super().get_server_commandline()]

    return RootSafePostgresql(
        initdb=find_program("initdb"),
        postgres=find_program("postgres"),
        postgres_args=" ".join(options),
    )
