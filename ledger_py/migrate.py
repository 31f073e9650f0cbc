"""Bring a database up to date: yoyo migrations, then the functions of sql/.

`migrate(url)` is safe to run again and from several processes at once: it
holds an advisory lock, applies pending migrations (tables, constraints,
roles, operations) and then (re)loads every sql/ file whose content changed
since it was last loaded. A second run with nothing new changes nothing.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from .conninfo import libpq_url, yoyo_url

# The role that owns the schema, its tables and functions (migrations/0009):
# NOLOGIN, no app or operator role is a member. The migrating user must be a
# superuser or a member of it.
SCHEMA_OWNER = "ledger_schema_owner"

# Arbitrary constant: the advisory lock that serializes concurrent migrate() calls.
MIGRATE_LOCK_KEY = 7_041_020_001


def _resource_dir(name: str) -> Path:
    """sql/ or migrations/: beside the package in a checkout, inside it when installed."""
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("ledger_py"))) / name


def sql_dir() -> Path:
    return _resource_dir("sql")


def migrations_dir() -> Path:
    return _resource_dir("migrations")


def sql_files() -> list[Path]:
    """The function sources in load order (their names start with a number)."""
    return sorted(sql_dir().glob("*.sql"))


def citus_file() -> Path:
    """The one file of Citus-specific SQL (the distribution), run only on Citus."""
    return sql_dir() / "citus" / "distribute.sql"


def citus_enabled(cursor: Any) -> bool:
    """Whether the database has the citus extension (then migrate distributes)."""
    cursor.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus'")
    return cursor.fetchone() is not None


def _schema_owner_login(conn: psycopg.Connection[Any]) -> None:
    """On Citus, before the migrations: the schema owner can reach the workers.

    Committed on its own: a worker sees the role's LOGIN and password only
    once committed, and Citus connects to the workers as the schema owner as
    soon as a function is created as it (sql/citus/distribute.sql).
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(citus_file().read_text(encoding="utf-8"))
        cur.execute("SELECT pg_temp.ledger_schema_owner_login()")


def _sequential(cursor: Any) -> None:
    # DDL on distributed and reference tables in one transaction (the
    # distribution, the GRANTs of sql/) must use one connection per node.
    cursor.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")


def _distribute_tables(conn: psycopg.Connection[Any]) -> bool:
    """On Citus, after the migrations: distribute the tables that are not yet.

    Committed before sql/ is loaded: Citus creates each function on the
    workers through connections of the schema owner, which see only committed
    tables. Returns True when something was distributed: every sql/ file is
    then reloaded, so that each function exists on every node.
    """
    with conn.transaction(), conn.cursor() as cur:
        _sequential(cur)
        cur.execute(citus_file().read_text(encoding="utf-8"))
        cur.execute("SELECT pg_temp.ledger_distribute_tables()")
        row = cur.fetchone()
    return bool(row and row[0])


def _distribute_functions(conn: psycopg.Connection[Any]) -> None:
    """On Citus, once sql/ is loaded and committed: the single-owner functions
    are distributed by owner_id, colocated with ledger.accounts."""
    with conn.transaction(), conn.cursor() as cur:
        _sequential(cur)
        cur.execute(citus_file().read_text(encoding="utf-8"))
        cur.execute("SELECT pg_temp.ledger_distribute_functions()")
        cur.fetchone()


# A clear error, before SET ROLE would give a bare "permission denied".
_CAN_ACT_AS_SCHEMA_OWNER = f"""
DO $check$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT pg_catalog.pg_has_role(current_user, '{SCHEMA_OWNER}', 'MEMBER') THEN
        RAISE EXCEPTION 'the migrating user % must be a superuser or a member of {SCHEMA_OWNER}',
                        current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Run the migrations as a superuser, or have one run: '
                         'GRANT {SCHEMA_OWNER} TO ' || quote_ident(current_user) || ';';
    END IF;
END
$check$
"""


def apply_sql_files(cursor: Any, only_changed: bool) -> list[str]:
    """Load sql/ files as SCHEMA_OWNER, recording each file's hash.

    Works with any DB-API cursor (yoyo hands its post-apply step a psycopg2
    or psycopg cursor). Returns the names of the files loaded. On Citus,
    migrate() distributes the tables before and the functions after.
    """
    cursor.execute("SELECT file_name, sha256 FROM ledger.sql_files")
    loaded = dict(cursor.fetchall())
    changed = []
    for path in sql_files():
        text = path.read_text(encoding="utf-8")
        digest = hashlib.sha256(text.encode()).hexdigest()
        if only_changed and loaded.get(path.name) == digest:
            continue
        changed.append((path.name, text, digest))
    if not changed:
        return []
    # Functions are created as the schema owner so that they are owned by it
    # and run as it (SECURITY DEFINER); no app or operator role can act as it.
    cursor.execute(_CAN_ACT_AS_SCHEMA_OWNER)
    cursor.execute(f"SET LOCAL ROLE {SCHEMA_OWNER}")
    if only_changed:
        # grants.sql must follow any function (re)load: it is always re-run.
        names = {name for name, _, _ in changed}
        for path in sql_files():
            if "grants" in path.name and path.name not in names:
                text = path.read_text(encoding="utf-8")
                changed.append((path.name, text, hashlib.sha256(text.encode()).hexdigest()))
    for _, text, _ in changed:
        cursor.execute(text)
    for name, _, digest in changed:
        cursor.execute(
            "INSERT INTO ledger.sql_files (file_name, sha256) VALUES (%s, %s) "
            "ON CONFLICT (file_name) DO UPDATE SET sha256 = excluded.sha256, applied_at = now()",
            (name, digest),
        )
    cursor.execute("RESET ROLE")
    return [name for name, _, _ in changed]


@contextmanager
def _migrate_lock(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))


def _create_citus_extension(conn: psycopg.Connection[Any]) -> None:
    """migrate(citus=True): the extension, if the database does not have it yet."""
    with conn.cursor() as cur:
        if citus_enabled(cur):
            return
        try:
            cur.execute("CREATE EXTENSION citus")
        except psycopg.Error as error:
            raise RuntimeError(
                "cannot create the citus extension in this database"
                f" ({error.diag.message_primary or error}): Citus must be installed and in"
                " shared_preload_libraries, and the migrating user a superuser"
            ) from None


def migrate(url: str, citus: bool = False) -> list[str]:
    """Apply pending migrations, then reload changed sql/ files.

    On a database with the citus extension the tables and the single-owner
    functions are distributed (sql/citus/distribute.sql), idempotently;
    `citus=True` creates the extension first. On plain PostgreSQL nothing
    Citus-specific runs. Returns what was done: migration ids applied and
    sql files loaded.
    """
    from yoyo import get_backend, read_migrations

    done: list[str] = []
    with _migrate_lock(url) as conn:
        if citus:
            _create_citus_extension(conn)
        with conn.cursor() as cur:
            on_citus = citus_enabled(cur)
        if on_citus:
            _schema_owner_login(conn)
        backend = get_backend(yoyo_url(url))
        try:
            migrations = read_migrations(str(migrations_dir()))
            with backend.lock():
                pending = backend.to_apply(migrations)
                done.extend(m.id for m in pending)
                # Runs post-apply.py too, which loads sql/ when anything was pending.
                backend.apply_migrations(pending)
        finally:
            backend.connection.close()
        reload_all = _distribute_tables(conn) if on_citus else False
        if reload_all:
            done.append("citus: tables distributed")
        with conn.transaction(), conn.cursor() as cur:
            if on_citus:
                _sequential(cur)
            done.extend(apply_sql_files(cur, only_changed=not reload_all))
        if on_citus:
            _distribute_functions(conn)
    return done


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ledger_py.migrate DATABASE_URL", file=sys.stderr)
        return 2
    done = migrate(args[0])
    print("applied: " + (", ".join(done) if done else "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
