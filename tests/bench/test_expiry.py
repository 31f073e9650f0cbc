"""The expiry scenario's planted grants are what grant_credits writes, and
expire_grants treats them so (bench/expiry.py): same rows, same key and
fingerprint, read as expired before their EXPIRE entry, expired once each
from two sessions, verify() empty throughout."""

from __future__ import annotations

from typing import Any

import psycopg

from bench import expiry

ACCOUNT = "balance, open_holds, last_seq, grants_since_seq, next_expiry - updated_at"
ENTRY = (
    "seq, app, operation, amount, balance, metadata, created_by, transfer_id, hold_id,"
    " reverses_entry_id, idempotency_key IS NOT NULL"
)
GRANT = (
    "seq, app, operation, amount, remaining, priority, expires_at - created_at, status,"
    " closed_at, source_owner_id, source_grant_id, entry_id IS NOT NULL"
)


def _row(conn: psycopg.Connection[Any], columns: str, table: str, owner: str) -> tuple[Any, ...]:
    rows = conn.execute(
        f"SELECT {columns} FROM ledger.{table} WHERE owner_id = %s",
        (owner,),
    ).fetchall()
    assert len(rows) == 1, (table, owner, rows)
    return tuple(rows[0])


def test_planted_grants_are_what_grant_credits_writes(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT ledger.define_app('bench', 'benchmarks')")
        conn.execute(
            "SELECT ledger.grant_credits('ref', 'bench', %s, 'promo-ref', %s)",
            (expiry.OPERATION, expiry.GRANT_AMOUNT),
        )
        expiry.plant_due_grants(db_url, "p", 40)
        assert conn.execute("SELECT count(*) FROM ledger.verify()").fetchone() == (0,)
        for columns, table in ((ACCOUNT, "accounts"), (ENTRY, "entries"), (GRANT, "grants")):
            assert _row(conn, columns, table, "p7") == _row(conn, columns, table, "ref"), table
        # A grant a day from its expiry has been warned of by expire_grants;
        # a planted grant is past that point, the fresh one is not.
        assert _row(conn, "expiring_notified", "grants", "p7") == (True,)
        assert _row(conn, "expiring_notified", "grants", "ref") == (False,)
        # Due, not yet expired: readers already count nothing.
        assert conn.execute("SELECT balance FROM ledger.get_balance('p7')").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM ledger.list_grants('p7')").fetchone() == (0,)
        # The planted key names the same request: the retry replays it (a
        # fingerprint that differed would raise LG005), after the owner's
        # write has expired the grant under its lock.
        replay = conn.execute(
            "SELECT replayed, operation, amount FROM ledger.grant_credits('p7', 'bench', %s,"
            " 'promo-p7', %s)",
            (expiry.OPERATION, expiry.GRANT_AMOUNT),
        ).fetchone()
        assert replay == (True, expiry.OPERATION, expiry.GRANT_AMOUNT)


def test_expire_all_expires_each_planted_grant_once(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT ledger.define_app('bench', 'benchmarks')")
    expiry.plant_due_grants(db_url, "q", 2500)
    sample, info = expiry.expire_all(db_url, sessions=2)
    assert sample.count == 2500
    assert sum(info["expired_per_session"]) == 2500
    assert info["calls"] >= 3  # max_rows 1000 per call
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT owner_id), sum(amount) FROM ledger.entries"
            " WHERE operation = 'EXPIRE'"
        ).fetchone()
        assert row == (2500, 2500, -2500 * expiry.GRANT_AMOUNT)
        assert conn.execute(
            "SELECT count(*) FROM ledger.accounts WHERE next_expiry IS NOT NULL OR balance <> 0"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM ledger.verify()").fetchone() == (0,)
        # Already warned of: expire_grants sent no grant.expiring event for them.
        assert conn.execute(
            "SELECT count(*) FROM ledger.events WHERE type = 'grant.expiring'"
        ).fetchone() == (0,)
