"""Migrating: yoyo alone, migrate() twice, a changed function file, python -m."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from ledger_py.migrate import mask_url, migrate, sql_files, yoyo_url

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
    expected = {
        "define_app",
        "define_operation",
        "post_entry",
        "get_balance",
        "get_entry",
        "list_entries",
        "balance_at",
        "create_hold",
        "capture_hold",
        "release_hold",
        "get_hold",
        "list_holds",
        "transfer",
        "reverse_entry",
        "app_report",
        "verify",
    }
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
