"""`ledger migrate` on a Citus coordinator distributes the ledger
(sql/citus/distribute.sql): per-owner tables by owner_id and colocated,
reference tables, the example app's tables as Citus local tables, the
single-owner writes delegated to the owner's worker, the schema owner able
to reach every node, the append-only triggers on the shards; a second run
changes nothing; an existing single-server ledger moves onto the cluster
without losing an entry.

`db_url` here is a fresh copy of the migrated database on the local cluster
(tests/conftest.py).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ledger_py.migrate import migrate

from ..sql.helpers import balance, call, one, post
from . import cluster as citus


@pytest.fixture
def backend() -> str:
    """db_url and conn of this module are on the Citus cluster (tests/conftest.py)."""
    return "citus"


PER_OWNER = {
    "ledger.accounts",
    "ledger.entries",
    "ledger.holds",
    "ledger.grants",
    "ledger.grant_spending",
    "ledger.events",
}
REFERENCE = {"ledger.apps", "ledger.operations", "ledger.api_keys", "ledger.balance_alerts"}
# The functions distributed by owner_id: what post_entry, create_hold and
# grant_credits run on the owner's shard, in a schema no caller may use.
SHARD_FUNCTIONS = {
    "ledger_shard.post_entry",
    "ledger_shard.create_hold",
    "ledger_shard.grant_credits",
}
_names = itertools.count()


def table_types(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, str, int]]:
    """{table: (citus_table_type, distribution column, colocation id)} of the ledger's schemas."""
    rows = conn.execute(
        "SELECT table_name::text, citus_table_type, distribution_column, colocation_id"
        " FROM citus_tables"
        " WHERE table_name::text LIKE 'ledger.%' OR table_name::text LIKE 'example_app.%'"
    ).fetchall()
    return {name: (kind, column, colocation) for name, kind, column, colocation in rows}


def on_workers(conn: psycopg.Connection[Any], command: str) -> list[str]:
    rows = conn.execute(
        "SELECT success, result FROM run_command_on_workers(%s) ORDER BY nodeport", (command,)
    ).fetchall()
    assert all(success for success, _ in rows), rows
    return [result for _, result in rows]


def test_per_owner_tables_are_distributed_by_owner_and_colocated(
    conn: psycopg.Connection[Any],
) -> None:
    types = table_types(conn)
    for table in PER_OWNER:
        assert types[table][:2] == ("distributed", "owner_id"), (table, types[table])
    assert len({types[table][2] for table in PER_OWNER}) == 1, types
    for table in REFERENCE:
        assert types[table][0] == "reference", (table, types[table])
    for table in ("example_app.content", "example_app.content_access"):
        assert types[table][0] == "local", (table, types[table])
    # Every table of the ledger's schemas is in Citus's metadata, except the
    # record of loaded sql/ files (read by migrate on the coordinator only),
    # the event feed (one table on the coordinator: a reader sees each
    # relay's copy whole), the webhook tables (no owner: the dispatcher's
    # statements run on the coordinator) and the console's users, cookie key
    # and verify runs (no owner: the console signs in and records there).
    plain = conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname IN ('ledger', 'example_app') AND c.relkind = 'r'"
        " AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = c.oid)"
        " AND NOT EXISTS (SELECT 1 FROM pg_dist_shard s WHERE c.relname LIKE"
        "                 (SELECT relname FROM pg_class WHERE oid = s.logicalrelid) || '\\_%%')"
    ).fetchall()
    assert sorted(plain) == [
        ("ledger.console_secret",),
        ("ledger.console_users",),
        ("ledger.event_feed",),
        ("ledger.sql_files",),
        ("ledger.verify_runs",),
        ("ledger.webhook_attempts",),
        ("ledger.webhook_deliveries",),
        ("ledger.webhook_endpoints",),
    ]


def test_an_owners_rows_live_on_one_worker_and_owners_spread_over_both(
    conn: psycopg.Connection[Any],
) -> None:
    owners = [f"spread-{i}" for i in range(20)]
    for owner in owners:
        post(conn, owner, "CREDIT_ADD", f"fund-{owner}", amount=5)
        one(
            conn,
            "create_hold",
            owner_id=owner,
            app="core",
            operation="CREDIT_SPEND",
            idempotency_key=f"h-{owner}",
            amount=2,
        )
    nodes = set()
    for owner in owners:
        places = {
            conn.execute(
                "SELECT nodeport FROM pg_dist_shard_placement"
                " WHERE shardid = get_shard_id_for_distribution_column(%s, %s::text)",
                (table, owner),
            ).fetchone()
            for table in PER_OWNER
        }
        assert len(places) == 1, (owner, places)
        nodes |= places
    assert len(nodes) == 2
    assert call(conn, "verify") == []


def test_only_the_shard_functions_are_delegated(conn: psycopg.Connection[Any]) -> None:
    distributed = conn.execute(
        "SELECT p.oid::regproc::text, d.force_delegation,"
        "       d.colocationid = (SELECT colocationid FROM pg_dist_partition"
        "                         WHERE logicalrelid = 'ledger.accounts'::regclass),"
        "       (p.proargnames)[d.distribution_argument_index + 1]"
        " FROM pg_dist_object d JOIN pg_proc p ON p.oid = d.objid"
        " WHERE d.classid = 'pg_proc'::regclass AND d.distribution_argument_index IS NOT NULL"
    ).fetchall()
    assert {name for name, *_ in distributed} == SHARD_FUNCTIONS
    assert {tuple(rest) for _, *rest in distributed} == {(True, True, "owner_id")}


def remote_commands(
    conn: psycopg.Connection[Any], call: Callable[[], object]
) -> list[tuple[str, str]]:
    """(command, where) of each command the coordinator sent while `call` ran."""
    sent: list[tuple[str, str]] = []

    def note(notice: psycopg.errors.Diagnostic) -> None:
        if (notice.message_primary or "").startswith("issuing "):
            sent.append((notice.message_primary or "", notice.message_detail or ""))

    conn.add_notice_handler(note)
    conn.execute("SET citus.log_remote_commands = on")
    try:
        call()
    finally:
        conn.execute("RESET citus.log_remote_commands")
        conn.remove_notice_handler(note)
    return sent


def test_a_write_runs_whole_on_the_owners_worker_in_a_transaction_block_or_not(
    conn: psycopg.Connection[Any],
) -> None:
    worker = conn.execute(
        "SELECT ':' || nodeport || ' ' FROM pg_dist_shard_placement"
        " WHERE shardid = get_shard_id_for_distribution_column('ledger.accounts', 'delegated')"
    ).fetchone()
    assert worker is not None

    def calls() -> list[str]:
        return [
            command + " @ " + where
            for command, where in sent
            if "ledger" in command and "assign_distributed_transaction_id" not in command
        ]

    # Outside a transaction block: the whole call, sent to the owner's worker,
    # inside the remote transaction Citus opens for it.
    sent = remote_commands(conn, lambda: post(conn, "delegated", "CREDIT_ADD", "d1", amount=3))
    assert len(calls()) == 1 and "ledger_shard.post_entry(" in calls()[0], sent
    assert worker[0] in calls()[0] + " ", sent

    # Inside one: the same single command, part of the caller's transaction.
    def in_a_transaction() -> None:
        with conn.transaction():
            post(conn, "delegated", "CREDIT_ADD", "d2", amount=4)
            one(
                conn,
                "create_hold",
                owner_id="delegated",
                app="core",
                operation="CREDIT_SPEND",
                idempotency_key="d3",
                amount=2,
            )

    sent = remote_commands(conn, in_a_transaction)
    assert [c.split("(")[0].split()[-1] for c in calls()] == [
        "ledger_shard.post_entry",
        "ledger_shard.create_hold",
    ], sent
    assert balance(conn, "delegated") == 7
    # The writer is the caller's role, though Citus reached the worker as the schema owner.
    writers = conn.execute(
        "SELECT DISTINCT created_by FROM ledger.entries WHERE owner_id = 'delegated'"
        " UNION SELECT created_by FROM ledger.holds WHERE owner_id = 'delegated'"
    ).fetchall()
    assert writers == [(citus.SUPERUSER,)]


def grant(
    conn: psycopg.Connection[Any], owner: str, key: str, amount: int, expires_at: Any
) -> None:
    one(
        conn,
        "grant_credits",
        owner_id=owner,
        app="core",
        operation="CREDIT_ADD",
        idempotency_key=key,
        amount=amount,
        expires_at=expires_at,
    )


def test_a_delegated_write_opens_no_connection_from_the_worker(db_url: str) -> None:
    """Everything a delegated write does runs on the owner's worker alone: the
    worker opens no connection to another node, so the call commits there with
    a one-phase commit. (A data-modifying CTE in the write path made Citus copy
    its intermediate results to every node, and commit on three with two-phase
    commit.) The worker's own remote commands are logged for the schema owner's
    sessions in this database and come back to the caller as notices."""
    owner = "stays-local"
    with psycopg.connect(db_url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT nodeport FROM pg_dist_shard_placement"
            " WHERE shardid = get_shard_id_for_distribution_column('ledger.accounts', %s::text)",
            (owner,),
        ).fetchone()
        assert row is not None
        port = int(row[0])
        admin.execute("SELECT ledger.define_app('alerting', 'an app with a balance alert')")
        admin.execute("SELECT ledger.set_balance_alert('alerting', 5)")
    database = db_url.rsplit("/", 1)[1]
    with psycopg.connect(citus.url(port, database), autocommit=True) as worker:
        worker.execute("SET citus.enable_ddl_propagation = off")  # this worker alone
        worker.execute(
            sql.SQL(
                "ALTER ROLE ledger_schema_owner IN DATABASE {} SET citus.log_remote_commands = on"
            ).format(sql.Identifier(database))
        )
    with psycopg.connect(db_url, autocommit=True) as conn:

        def writes() -> None:
            post(conn, owner, "CREDIT_ADD", "c1", amount=10)
            post(conn, owner, "CREDIT_ADD", "c1", amount=10)  # a replay
            post(conn, owner, "CREDIT_SPEND", "s1", amount=3, app="alerting")  # spends a grant
            post(conn, owner, "CREDIT_SPEND", "s2", amount=4, app="alerting")  # crosses the alert
            grant(conn, owner, "g1", 2, None)
            expires_at = conn.execute("SELECT clock_timestamp() + interval '1 second'").fetchone()
            assert expires_at is not None
            grant(conn, owner, "g2", 1, expires_at[0])
            one(
                conn,
                "create_hold",
                owner_id=owner,
                app="core",
                operation="CREDIT_SPEND",
                idempotency_key="h1",
                amount=1,
            )
            time.sleep(
                max(0.0, (expires_at[0] - datetime.now(timezone.utc)).total_seconds() + 0.05)
            )
            post(conn, owner, "CREDIT_ADD", "c2", amount=1)  # expires g2 first

        sent = remote_commands(conn, writes)
        assert balance(conn, owner) == 10 - 3 - 4 + 2 + 1 - 1 + 1
        expired = conn.execute(
            "SELECT count(*) FROM ledger.entries WHERE owner_id = %s AND operation = 'EXPIRE'",
            (owner,),
        ).fetchone()
        assert expired == (1,)
    # Only the coordinator's own commands, each to the owner's worker: per call
    # the remote transaction's BEGIN, the call and COMMIT.
    assert len(sent) == 3 * 8, sent
    assert all(f":{port} " in where and "from" not in where for _, where in sent), sent
    assert not [command for command, _ in sent if "PREPARE" in command or "COPY" in command], sent


def test_the_public_single_owner_functions_of_an_earlier_release_are_undistributed(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The release before distributed ledger.post_entry, get_balance, ... by
    owner_id: migrate clears that (they are entry points now)."""
    for function in ("ledger.get_balance(text)", "ledger.list_entries(text,bigint,integer,text)"):
        conn.execute(
            "SELECT create_distributed_function(%s::regprocedure, 'owner_id',"
            " colocate_with := 'ledger.accounts')",
            (function,),
        )
    migrate(db_url)
    distributed = conn.execute(
        "SELECT p.oid::regproc::text FROM pg_dist_object d JOIN pg_proc p ON p.oid = d.objid"
        " WHERE d.classid = 'pg_proc'::regclass AND d.distribution_argument_index IS NOT NULL"
    ).fetchall()
    assert {name for (name,) in distributed} == SHARD_FUNCTIONS
    assert balance(conn, "nobody") == 0


def test_every_function_exists_on_every_node(conn: psycopg.Connection[Any]) -> None:
    query = (
        "SELECT count(*) FROM pg_proc"
        " WHERE pronamespace IN ('ledger'::regnamespace, 'ledger_shard'::regnamespace)"
    )
    here = conn.execute(query).fetchone()
    assert here is not None
    assert on_workers(conn, query) == [str(here[0])] * 2


def test_the_schema_owner_reaches_the_workers_and_no_one_else_knows_how(
    conn: psycopg.Connection[Any],
) -> None:
    login = "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'ledger_schema_owner'"
    assert conn.execute(login).fetchone() == (True,)
    assert on_workers(conn, login) == ["t", "t"]
    # Its password is in pg_dist_authinfo on every node (superusers only).
    authinfo = (
        "SELECT count(*) FROM pg_dist_authinfo"
        " WHERE rolename = 'ledger_schema_owner' AND authinfo LIKE 'password=%'"
    )
    assert conn.execute(authinfo).fetchone() == (1,)
    assert on_workers(conn, authinfo) == ["1", "1"]
    privileges = conn.execute(
        "SELECT has_table_privilege(r, 'pg_dist_authinfo', 'SELECT') FROM unnest(%s::text[]) r",
        (["ledger_app", "ledger_reader", "ledger_owner"],),
    ).fetchall()
    assert privileges == [(False,)] * 3
    # Still no member: nobody but a superuser acts as it.
    members = conn.execute(
        "SELECT count(*) FROM pg_auth_members WHERE roleid = 'ledger_schema_owner'::regrole"
    ).fetchone()
    assert members == (0,)


def test_the_journal_stays_append_only_on_the_shards(conn: psycopg.Connection[Any]) -> None:
    post(conn, "journal", "CREDIT_ADD", "j1", amount=2)
    for statement in (
        "UPDATE ledger.entries SET amount = 1000 WHERE owner_id = 'journal'",
        "DELETE FROM ledger.entries WHERE owner_id = 'journal'",
        "TRUNCATE ledger.entries CASCADE",
    ):
        with pytest.raises(psycopg.Error) as info:
            conn.execute(statement)
        assert info.value.sqlstate == "LG013", (statement, info.value)
    assert balance(conn, "journal") == 2


def test_a_second_migrate_changes_nothing(db_url: str, conn: psycopg.Connection[Any]) -> None:
    before = table_types(conn)
    assert migrate(db_url) == []
    assert table_types(conn) == before


def test_a_running_single_server_ledger_moves_onto_the_cluster(citus_cluster: str) -> None:
    """The README's path: a plain ledger with data; Citus added to it, workers
    registered; `ledger migrate` distributes the existing tables, every entry kept."""
    name = f"ledger_move_{next(_names)}"
    coordinator_port, workers = citus.nodes_of(citus_cluster)
    plain_url = citus_cluster.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(citus_cluster, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(plain_url)
        with psycopg.connect(plain_url, autocommit=True) as conn:
            owners = [f"mover-{i}" for i in range(12)]
            for owner in owners:
                post(conn, owner, "CREDIT_ADD", f"fund-{owner}", amount=10)
                post(conn, owner, "CREDIT_SPEND", f"spend-{owner}", amount=3)
            one(
                conn,
                "transfer",
                from_owner=owners[0],
                to_owner=owners[1],
                amount=2,
                app="core",
                idempotency_key="move-t1",
            )
            before = conn.execute(
                "SELECT owner_id, seq, entry_id, amount, balance FROM ledger.entries ORDER BY 1, 2"
            ).fetchall()
            # Citus joins: the extension here, the same database on the workers, registered.
            for host, port in workers:
                worker = f"postgresql://{citus.SUPERUSER}@{host}:{port}/postgres"
                with psycopg.connect(worker, autocommit=True) as w:
                    w.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                with psycopg.connect(worker.rsplit("/", 1)[0] + "/" + name, autocommit=True) as w:
                    w.execute("CREATE EXTENSION citus")
            conn.execute("CREATE EXTENSION citus")
            conn.execute(
                "SELECT citus_set_coordinator_host(%s, %s)", (citus.HOST, coordinator_port)
            )
            for host, port in workers:
                conn.execute("SELECT citus_add_node(%s, %s)", (host, port))
        done = migrate(plain_url)
        assert "citus: tables distributed" in done
        with psycopg.connect(plain_url, autocommit=True) as conn:
            assert table_types(conn)["ledger.entries"][:2] == ("distributed", "owner_id")
            after = conn.execute(
                "SELECT owner_id, seq, entry_id, amount, balance FROM ledger.entries ORDER BY 1, 2"
            ).fetchall()
            assert after == before
            assert call(conn, "verify") == []
            post(conn, owners[2], "CREDIT_SPEND", "after-the-move", amount=1)
            assert balance(conn, owners[2]) == 6
            assert call(conn, "verify") == []
        assert migrate(plain_url) == []
    finally:
        citus.drop_database(citus_cluster, name)


def test_a_service_login_role_works_on_every_node(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Services log in as members of ledger_app. On Citus their own reads reach
    the workers as that login role, their calls run as the schema owner there,
    and created_by still names the service, wherever the statement ran."""
    service = "ledger_citus_test_service"
    conn.execute(
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN"
            " CREATE ROLE {role} LOGIN IN ROLE ledger_app; END IF; END $$"
        ).format(name=sql.Literal(service), role=sql.Identifier(service))
    )
    first, second = owners_on_two_workers(conn)
    service_url = db_url.replace(f"{citus.SUPERUSER}@", f"{service}@", 1)
    with psycopg.connect(service_url, autocommit=True) as svc:
        post(svc, first, "CREDIT_ADD", "svc-1", amount=10)  # delegated to first's worker
        with svc.transaction():  # delegated too, in the service's transaction
            post(svc, second, "CREDIT_ADD", "svc-2", amount=5)
        one(
            svc,
            "transfer",
            from_owner=first,
            to_owner=second,
            amount=4,
            app="core",
            idempotency_key="svc-t",
        )  # across the workers
        h = one(
            svc,
            "create_hold",
            owner_id=second,
            app="core",
            operation="CREDIT_SPEND",
            idempotency_key="svc-h",
            amount=2,
        )
        one(svc, "capture_hold", hold_id=h["hold_id"], app="core", owner_id=second)
        assert balance(svc, first) == 6 and balance(svc, second) == 7
        # Its own read of every shard, as itself.
        writers = svc.execute("SELECT DISTINCT created_by FROM ledger.entries").fetchall()
        assert writers == [(service,)]
        assert len(call(svc, "list_entries", owner_id=second)) == 3
        assert call(svc, "verify") == []


def owners_on_two_workers(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    by_node: dict[int, str] = {}
    for i in range(60):
        owner = f"two-workers-{i}"
        row = conn.execute(
            "SELECT nodeport FROM pg_dist_shard_placement"
            " WHERE shardid = get_shard_id_for_distribution_column('ledger.accounts', %s::text)",
            (owner,),
        ).fetchone()
        assert row is not None
        by_node.setdefault(int(row[0]), owner)
    assert len(by_node) == 2, by_node
    first, second = sorted(by_node.values())
    return first, second
