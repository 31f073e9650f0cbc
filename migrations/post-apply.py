"""Runs after yoyo applied any migration: (re)load every function of sql/.

`yoyo apply` alone thereby brings a blank database fully up. The loader is
ledger_py.migrate.apply_sql_files (one implementation for both entry points).
"""

import sys
from pathlib import Path

from yoyo import step

try:
    from ledger_py.migrate import apply_sql_files, citus_enabled
except ImportError:  # yoyo run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ledger_py.migrate import apply_sql_files, citus_enabled


def load_functions(conn):
    cursor = conn.cursor()
    try:
        if citus_enabled(cursor):
            # On Citus, `ledger migrate` loads sql/ itself once the new tables
            # are distributed (a function made before its tables are distributed
            # would not reach the workers).
            return
        apply_sql_files(cursor, only_changed=False)
    finally:
        cursor.close()


steps = [step(load_functions)]
