"""Migrating: yoyo alone, migrate() twice, a changed function file, python -m."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from ledger_py.conninfo import mask_url, yoyo_url
from ledger_py.migrate import migrate, sql_files
from ledger_py.queries import ALL_CALLS

ROOT = Path(__file__).resolve().parents[2]


def _works(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT balance FROM ledger.post_entry('m', 'core', 'CREDIT_ADD', 'k', 2)"
        ).fetchone()
        assert row == (2,)
        functions = {
            r[0]
            for r in conn.execute(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = 'ledger'"
            )
        }
    expected = {call.name for call in ALL_CALLS}
    assert expected <= functions


def test_yoyo_apply_alone_brings_a_blank_database_up(blank_db_url):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "yoyo"), "apply", "--batch", "--database", blank_db_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    _works(blank_db_url)


def test_migrate_twice_changes_nothing_the_second_time(blank_db_url):
    first = migrate(blank_db_url)
    assert "0001_roles_and_schema" in first
    with psycopg.connect(blank_db_url) as conn:
        stamps = conn.execute(
            "SELECT file_name, applied_at FROM ledger.sql_files ORDER BY 1"
        ).fetchall()
    assert [name for name, _ in stamps] == [p.name for p in sql_files()]
    assert migrate(blank_db_url) == []
    with psycopg.connect(blank_db_url) as conn:
        assert (
            conn.execute("SELECT file_name, applied_at FROM ledger.sql_files ORDER BY 1").fetchall()
            == stamps
        )
    _works(blank_db_url)


def test_a_changed_function_file_is_reapplied(db_url):
    target = next(p.name for p in sql_files() if "entries" in p.name)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # As if the file had changed since it was loaded, and its function was gone.
        conn.execute("UPDATE ledger.sql_files SET sha256 = 'stale' WHERE file_name = %s", (target,))
        conn.execute("DROP FUNCTION ledger.balance_at(text, timestamptz)")
    done = migrate(db_url)
    assert target in done
    assert migrate(db_url) == []
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT ledger.balance_at('nobody', now())").fetchone() == (0,)
        conn.execute("SET ROLE ledger_reader")  # grants were re-applied with it
        assert conn.execute("SELECT ledger.balance_at('nobody', now())").fetchone() == (0,)
    _works(db_url)


def test_python_dash_m_migrate(blank_db_url):
    result = subprocess.run(
        [sys.executable, "-m", "ledger_py.migrate", blank_db_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    _works(blank_db_url)


def test_concurrent_migrations_serialize(blank_db_url):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: migrate(blank_db_url), range(3)))
    assert sum(1 for r in results if "0002_core_tables" in r) == 1
    _works(blank_db_url)


def test_url_helpers():
    assert yoyo_url("postgresql://u:p@h:1/d") == "postgresql+psycopg://u:p@h:1/d"
    assert yoyo_url("postgres://h/d") == "postgresql+psycopg://h/d"
    assert (
        mask_url("postgresql://user:s3cret@db.example:5432/ledger")
        == "postgresql://user:***@db.example:5432/ledger"
    )
    assert mask_url("postgresql://db.example/ledger") == "postgresql://db.example/ledger"


def test_migrate_from_an_installed_wheel(blank_db_url, tmp_path):
    """sql/ and migrations/ ship inside the wheel: migrate() works outside a checkout."""
    wheels = tmp_path / "wheels"
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("*.whl"))
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    script = (
        "import importlib, sys; m = importlib.import_module('ledger_py.migrate'); "
        "assert m.__file__.startswith(sys.argv[2]), m.__file__; "
        "print(m.migrations_dir()); m.migrate(sys.argv[1])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, blank_db_url, str(target)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
    _works(blank_db_url)


def _login(server_admin: psycopg.Connection[Any], name: str, options: str) -> None:
    server_admin.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN"
        f" CREATE ROLE {name} LOGIN {options}; END IF; END $$"
    )


def _as(url: str, user: str) -> str:
    return urlunsplit(
        urlsplit(url)._replace(netloc=f"{user}@{urlsplit(url).netloc.split('@')[-1]}")
    )


def _owners(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'ledger'"
            " UNION SELECT pg_get_userbyid(p.proowner) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ledger'"
        ).fetchall()
    return {r[0] for r in rows}


def test_a_non_superuser_with_createrole_migrates(blank_db_url):
    """The migrating user needs no superuser: with CREATEROLE (and the
    database) it makes itself a member of ledger_owner and of
    ledger_schema_owner, and everything ends up owned by the schema owner."""
    name = urlsplit(blank_db_url).path.lstrip("/")
    with psycopg.connect(blank_db_url, autocommit=True) as admin:
        _login(admin, "ledger_migrator", "CREATEROLE")
        admin.execute(f'ALTER DATABASE "{name}" OWNER TO ledger_migrator')
        try:
            url = _as(blank_db_url, "ledger_migrator")
            try:
                psycopg.connect(url).close()
            except psycopg.OperationalError:
                pytest.skip("cannot log in as a new role on this server")
            assert "0009_schema_owner" in migrate(url)
            assert migrate(url) == []
            _works(url)
            assert _owners(blank_db_url) == {"ledger_schema_owner"}
        finally:
            # Roles are cluster-wide: leave no login able to act as the owner.
            admin.execute("REVOKE ledger_schema_owner, ledger_owner FROM ledger_migrator")
            admin.execute(f'ALTER DATABASE "{name}" OWNER TO CURRENT_USER')


def test_a_migrating_user_that_cannot_act_as_the_schema_owner_gets_a_clear_error(blank_db_url):
    """A login that may act as ledger_owner but neither is a superuser nor may
    grant itself ledger_schema_owner: migration 0009 stops, naming the fix."""
    name = urlsplit(blank_db_url).path.lstrip("/")
    with psycopg.connect(blank_db_url, autocommit=True) as admin:
        migrate(blank_db_url.replace(name, "postgres"))  # the roles exist (cluster-wide)
        _login(admin, "ledger_weak_migrator", "")
        admin.execute("GRANT ledger_owner TO ledger_weak_migrator")
        admin.execute(f'ALTER DATABASE "{name}" OWNER TO ledger_weak_migrator')
        try:
            url = _as(blank_db_url, "ledger_weak_migrator")
            try:
                psycopg.connect(url).close()
            except psycopg.OperationalError:
                pytest.skip("cannot log in as a new role on this server")
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                migrate(url)
            assert "must be a superuser or a member of ledger_schema_owner" in str(err.value)
            assert "GRANT ledger_schema_owner TO ledger_weak_migrator" in (
                err.value.diag.message_hint or ""
            )
        finally:
            admin.execute("REVOKE ledger_owner FROM ledger_weak_migrator")
            admin.execute(f'ALTER DATABASE "{name}" OWNER TO CURRENT_USER')


# The last commit before ledger_schema_owner: its sql/ is the previous release's.
PREVIOUS_RELEASE = "62c2f76"


def _at_previous_release(path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{PREVIOUS_RELEASE}:{path}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def test_upgrade_from_the_release_where_ledger_owner_owned_the_tables(blank_db_url, tmp_path):
    """The previous release: migrations up to 0008, functions loaded as
    ledger_owner, entries written. migrate() moves every object to
    ledger_schema_owner, keeps the data, and ledger_owner loses the trigger."""
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted((ROOT / "migrations").glob("000[1-8]_*.sql")):
        (old / path.name).write_text(path.read_text())
    old_sql = [
        _at_previous_release(path)
        for path in _git_ls(PREVIOUS_RELEASE, "sql")
        if path.endswith(".sql")
    ]
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(blank_db_url))
    try:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations(str(old))))
    finally:
        backend.connection.close()
    with psycopg.connect(blank_db_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE ledger_owner")
            for text in old_sql:
                conn.execute(text)
        conn.execute("SELECT ledger.post_entry('old', 'core', 'CREDIT_ADD', 'before', 7)")
        assert _owners(blank_db_url) == {"ledger_owner"}
    assert "0009_schema_owner" in migrate(blank_db_url)
    assert _owners(blank_db_url) == {"ledger_schema_owner"}
    with psycopg.connect(blank_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT balance FROM ledger.get_balance('old')").fetchone() == (7,)
        conn.execute("SET ROLE ledger_owner")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only")
        conn.execute("RESET ROLE")
    _works(blank_db_url)


# The release before owner-scoped keys and seq (migration 0013): its
# migrations and sql/ are taken from git, as that release shipped them.
BEFORE_OWNER_SCOPE = "0c68ac7"


def _git_show(commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def _git_ls(commit: str, folder: str) -> list[str]:
    return subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", commit, f"{folder}/"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()


def test_a_ledger_of_the_previous_release_migrates_forward_with_seq_filled(blank_db_url, tmp_path):
    """A ledger migrated and written by the release before owner scope (keys per
    app, no seq) migrates forward without losing an entry: each owner's entries
    are numbered 1..n in their existing order (entry_id order, which was lock
    order then), the accounts know their last seq, verify() is empty, old keys
    still replay for their owner, and new entries continue each owner's seq."""
    old = tmp_path / "migrations"
    old.mkdir()
    for path in _git_ls(BEFORE_OWNER_SCOPE, "migrations"):
        if path.endswith(".sql"):
            (old / Path(path).name).write_text(_git_show(BEFORE_OWNER_SCOPE, path))
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(blank_db_url))
    try:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations(str(old))))
    finally:
        backend.connection.close()
    with psycopg.connect(blank_db_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE ledger_schema_owner")
            for path in _git_ls(BEFORE_OWNER_SCOPE, "sql"):
                conn.execute(_git_show(BEFORE_OWNER_SCOPE, path))
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_schema = 'ledger' AND table_name = 'entries' AND column_name = 'seq'"
        ).fetchone() == (0,)
        # Interleaved writes of three owners: credits, a debit, a transfer, a
        # captured hold, a reversal, a batch.
        for n in range(3):
            for owner in ("ann", "bob", "cy"):
                conn.execute(
                    "SELECT ledger.post_entry(%s, 'core', 'CREDIT_ADD', %s, 10)",
                    (owner, f"{owner}-c{n}"),
                )
        conn.execute("SELECT ledger.post_entry('bob', 'core', 'CREDIT_SPEND', 'bob-s', 4)")
        conn.execute("SELECT * FROM ledger.transfer('cy', 'ann', 5, 'core', 'cy-t')")
        hold_id = conn.execute(
            "SELECT hold_id FROM ledger.create_hold('ann', 'core', 'CREDIT_SPEND', 'ann-h', 3)"
        ).fetchone()[0]
        conn.execute("SELECT * FROM ledger.capture_hold(%s, 'core')", (hold_id,))
        first_bob = conn.execute(
            "SELECT min(entry_id) FROM ledger.entries WHERE owner_id = 'bob'"
        ).fetchone()[0]
        conn.execute("SELECT * FROM ledger.reverse_entry(%s, 'core', 'bob-r')", (first_bob,))
        conn.execute(
            "SELECT * FROM ledger.post_entries(%s)",
            (
                '[{"owner_id": "cy", "app": "core", "operation": "CREDIT_ADD",'
                ' "idempotency_key": "cy-b1", "amount": 1},'
                ' {"owner_id": "ann", "app": "core", "operation": "CREDIT_ADD",'
                ' "idempotency_key": "ann-b1", "amount": 1}]',
            ),
        )
        before = conn.execute(
            "SELECT entry_id, owner_id, amount, balance, idempotency_key, created_at"
            " FROM ledger.entries ORDER BY entry_id"
        ).fetchall()
        balances = dict(conn.execute("SELECT owner_id, balance FROM ledger.accounts").fetchall())

    assert "0013_owner_scoped" in migrate(blank_db_url)

    with psycopg.connect(blank_db_url, autocommit=True) as conn:
        after = conn.execute(
            "SELECT entry_id, owner_id, amount, balance, idempotency_key, created_at"
            " FROM ledger.entries ORDER BY entry_id"
        ).fetchall()
        assert after == before
        for owner in ("ann", "bob", "cy"):
            rows = conn.execute(
                "SELECT entry_id, seq FROM ledger.entries WHERE owner_id = %s ORDER BY entry_id",
                (owner,),
            ).fetchall()
            assert [seq for _, seq in rows] == list(range(1, len(rows) + 1))
            assert conn.execute(
                "SELECT last_seq, balance FROM ledger.accounts WHERE owner_id = %s", (owner,)
            ).fetchone() == (len(rows), balances[owner])
        assert conn.execute("SELECT * FROM ledger.verify()").fetchall() == []
        # An old key replays for its owner; for another owner it is a new request.
        replay = conn.execute(
            "SELECT entry_id, replayed FROM ledger.post_entry('ann', 'core', 'CREDIT_ADD', 'ann-c0', 10)"
        ).fetchone()
        assert replay == (before[0][0], True)
        fresh = conn.execute(
            "SELECT replayed FROM ledger.post_entry('bob', 'core', 'CREDIT_ADD', 'ann-c0', 10)"
        ).fetchone()
        assert fresh == (False,)
        n_bob = sum(1 for row in before if row[1] == "bob")
        assert conn.execute(
            "SELECT max(seq) FROM ledger.entries WHERE owner_id = 'bob'"
        ).fetchone() == (n_bob + 1,)
        assert conn.execute("SELECT * FROM ledger.verify()").fetchall() == []
    _works(blank_db_url)


# The last commit before credit grants.
BEFORE_GRANTS = "fabe939"


def test_a_ledger_of_the_release_before_grants_gets_one_grant_per_owner(blank_db_url, tmp_path):
    """Credits that existed before grants become one never-expiring grant per
    owner (OPENING_BALANCE, no entry); debits written before have no spending
    rows and verify() checks from the migration on; afterwards debits spend
    the opening grant, and reversing an entry of before grants still works."""
    old = tmp_path / "migrations"
    old.mkdir()
    for path in _git_ls(BEFORE_GRANTS, "migrations"):
        if path.endswith(".sql"):
            (old / Path(path).name).write_text(_git_show(BEFORE_GRANTS, path))
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(blank_db_url))
    try:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations(str(old))))
    finally:
        backend.connection.close()
    with psycopg.connect(blank_db_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE ledger_schema_owner")
            for path in _git_ls(BEFORE_GRANTS, "sql"):
                if path.endswith(".sql"):
                    conn.execute(_git_show(BEFORE_GRANTS, path))
        assert conn.execute("SELECT to_regclass('ledger.grants')").fetchone() == (None,)
        for owner, credit, debit in (("ann", 10, 4), ("bob", 5, 5), ("cy", 7, 0)):
            conn.execute(
                "SELECT ledger.post_entry(%s, 'core', 'CREDIT_ADD', 'c', %s)", (owner, credit)
            )
            if debit:
                conn.execute(
                    "SELECT ledger.post_entry(%s, 'core', 'CREDIT_SPEND', 'd', %s)", (owner, debit)
                )
        old_debit, old_credit = conn.execute(
            "SELECT max(entry_id) FILTER (WHERE amount < 0), max(entry_id) FILTER (WHERE amount > 0)"
            " FROM ledger.entries WHERE owner_id = 'ann'"
        ).fetchone()
        before = conn.execute("SELECT * FROM ledger.entries ORDER BY entry_id").fetchall()

    assert "0014_credit_grants" in migrate(blank_db_url)

    with psycopg.connect(blank_db_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT entry_id, owner_id, amount, balance FROM ledger.entries ORDER BY entry_id"
        ).fetchall() == [(r[0], r[1], r[4], r[5]) for r in before]
        opening = conn.execute(
            "SELECT owner_id, amount, remaining, expires_at, priority, operation, entry_id"
            " FROM ledger.grants ORDER BY owner_id"
        ).fetchall()
        assert opening == [
            ("ann", 6, 6, None, 50, "OPENING_BALANCE", None),
            ("cy", 7, 7, None, 50, "OPENING_BALANCE", None),
        ]
        assert conn.execute("SELECT * FROM ledger.verify()").fetchall() == []
        conn.execute("SELECT ledger.post_entry('ann', 'core', 'CREDIT_SPEND', 'd2', 2)")
        assert conn.execute(
            "SELECT remaining FROM ledger.grants WHERE owner_id = 'ann'"
        ).fetchone() == (4,)
        # A debit of before grants gives its credits back as a new grant; a
        # credit of before grants is taken back in spending order.
        conn.execute("SELECT * FROM ledger.reverse_entry(%s, 'core', 'r1')", (old_debit,))
        assert conn.execute("SELECT balance FROM ledger.get_balance('ann')").fetchone() == (8,)
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT * FROM ledger.reverse_entry(%s, 'core', 'r2')", (old_credit,))
        assert err.value.sqlstate == "LG001"
        conn.execute("SELECT ledger.post_entry('ann', 'core', 'CREDIT_ADD', 'c2', 2)")
        conn.execute("SELECT * FROM ledger.reverse_entry(%s, 'core', 'r2')", (old_credit,))
        assert conn.execute("SELECT balance FROM ledger.get_balance('ann')").fetchone() == (0,)
        assert conn.execute("SELECT * FROM ledger.verify()").fetchall() == []
    _works(blank_db_url)
