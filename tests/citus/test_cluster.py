"""The local Citus cluster is a real one: two active workers, distributed and
colocated tables whose rows land on both workers, a replicated reference
table, multi-shard transactions committed by two-phase commit (or not at all),
and a distributed PL/pgSQL function delegated to the worker of its argument.

Each test works in tables of its own in the coordinator's `postgres` database
and drops them afterwards.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

_names = itertools.count()
OWNERS = [f"owner-{i}" for i in range(60)]


@pytest.fixture
def conn(citus_cluster: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(citus_cluster, autocommit=True) as connection:
        yield connection


@pytest.fixture
def names(conn: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """Unique table names for one test; the tables, and functions named `<table>_add`, dropped after."""
    made = [f"smoke_{next(_names)}_{i}" for i in range(2)]
    yield made
    for name in reversed(made):
        conn.execute(
            sql.SQL("DROP FUNCTION IF EXISTS {}(text, int)").format(sql.Identifier(f"{name}_add"))
        )
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def worker_ports(conn: psycopg.Connection[Any]) -> set[int]:
    rows = conn.execute("SELECT node_port FROM citus_get_active_worker_nodes()").fetchall()
    return {port for (port,) in rows}


def rows_per_node(conn: psycopg.Connection[Any], table: str) -> Counter[int]:
    """Rows of a distributed or reference table, counted on each placement's node."""
    rows = conn.execute(
        "SELECT nodeport, result FROM run_command_on_placements(%s, 'SELECT count(*) FROM %%s')",
        (table,),
    ).fetchall()
    counts: Counter[int] = Counter()
    for port, result in rows:
        counts[port] += int(result)
    return counts


def node_of(conn: psycopg.Connection[Any], table: str, value: str) -> int:
    """The port of the node holding the shard of `table` for distribution value `value`."""
    row = conn.execute(
        "SELECT p.nodeport FROM pg_dist_shard_placement p"
        " WHERE p.shardid = get_shard_id_for_distribution_column(%s, %s::text)",
        (table, value),
    ).fetchone()
    assert row is not None
    return int(row[0])


def owners_on_two_workers(conn: psycopg.Connection[Any], table: str) -> tuple[str, str]:
    by_node: dict[int, str] = {}
    for owner in OWNERS:
        by_node.setdefault(node_of(conn, table, owner), owner)
    assert len(by_node) == 2, by_node
    first, second = by_node.values()
    return first, second


def distributed(
    conn: psycopg.Connection[Any], table: str, colocate_with: str | None = None
) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (owner_id text NOT NULL, n int NOT NULL, PRIMARY KEY (owner_id, n))"
        ).format(sql.Identifier(table))
    )
    conn.execute(
        "SELECT create_distributed_table(%s, 'owner_id', colocate_with => %s)",
        (table, colocate_with or "default"),
    )


def test_two_workers_are_active(conn: psycopg.Connection[Any]) -> None:
    ports = worker_ports(conn)
    assert len(ports) == 2
    coordinator = conn.execute("SELECT nodeport FROM pg_dist_node WHERE groupid = 0").fetchone()
    assert coordinator is not None and coordinator[0] not in ports
    # Every worker answers a command sent through the coordinator.
    answers = conn.execute(
        "SELECT nodeport, success, result FROM run_command_on_workers('SELECT current_setting(''port'')')"
    ).fetchall()
    assert {(port, True, str(port)) for port in ports} == set(answers)


def test_distributed_and_colocated_tables_spread_over_both_workers(
    conn: psycopg.Connection[Any], names: list[str]
) -> None:
    accounts, entries = names
    distributed(conn, accounts)
    distributed(conn, entries, colocate_with=accounts)
    colocation = conn.execute(
        "SELECT logicalrelid::text, colocationid FROM pg_dist_partition"
        " WHERE logicalrelid = ANY (%s::regclass[])",
        ([accounts, entries],),
    ).fetchall()
    assert len({group for _, group in colocation}) == 1, colocation
    for table in (accounts, entries):
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT o, 1 FROM unnest(%s::text[]) AS o").format(
                sql.Identifier(table)
            ),
            (OWNERS,),
        )
        counts = rows_per_node(conn, table)
        assert set(counts) == worker_ports(conn), counts
        assert all(count > 0 for count in counts.values()), counts
        assert sum(counts.values()) == len(OWNERS)
    # Colocated: one owner's rows of both tables share a worker, and a join on the
    # owner is one task on that worker.
    for owner in OWNERS[:10]:
        assert node_of(conn, accounts, owner) == node_of(conn, entries, owner)
    plan = "\n".join(
        row[0]
        for row in conn.execute(
            sql.SQL(
                "EXPLAIN SELECT * FROM {} a JOIN {} e USING (owner_id) WHERE owner_id = %s"
            ).format(sql.Identifier(accounts), sql.Identifier(entries)),
            (OWNERS[0],),
        )
    )
    assert "Task Count: 1" in plan, plan


def test_reference_table_is_replicated_on_every_node(
    conn: psycopg.Connection[Any], names: list[str]
) -> None:
    table = names[0]
    conn.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY)").format(sql.Identifier(table)))
    conn.execute("SELECT create_reference_table(%s)", (table,))
    conn.execute(sql.SQL("INSERT INTO {} VALUES ('a'), ('b'), ('c')").format(sql.Identifier(table)))
    counts = rows_per_node(conn, table)
    assert worker_ports(conn) <= set(counts), counts
    assert set(counts.values()) == {3}, counts


def test_multi_shard_transaction_commits_on_both_workers_with_two_phase_commit(
    conn: psycopg.Connection[Any], names: list[str]
) -> None:
    table = names[0]
    distributed(conn, table)
    first, second = owners_on_two_workers(conn, table)
    remote: list[str] = []
    conn.add_notice_handler(lambda notice: remote.append(notice.message_primary or ""))
    conn.execute("SET citus.log_remote_commands = on")
    with conn.transaction():
        for owner in (first, second):
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, 1)").format(sql.Identifier(table)), (owner,)
            )
    conn.execute("RESET citus.log_remote_commands")
    prepared = [m for m in remote if "PREPARE TRANSACTION" in m]
    committed = [m for m in remote if "COMMIT PREPARED" in m]
    assert len(prepared) == 2 and len(committed) == 2, remote
    assert conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    ).fetchone() == (2,)
    assert +rows_per_node(conn, table) == {
        node_of(conn, table, first): 1,
        node_of(conn, table, second): 1,
    }


def test_failing_multi_shard_transaction_leaves_nothing_on_any_worker(
    conn: psycopg.Connection[Any], names: list[str]
) -> None:
    table = names[0]
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (owner_id text NOT NULL, n int NOT NULL,"
            " UNIQUE (owner_id, n) DEFERRABLE INITIALLY DEFERRED)"
        ).format(sql.Identifier(table))
    )
    conn.execute("SELECT create_distributed_table(%s, 'owner_id')", (table,))
    first, second = owners_on_two_workers(conn, table)
    insert = sql.SQL("INSERT INTO {} VALUES (%s, 1)").format(sql.Identifier(table))
    # An error in the middle: both workers had a write, neither keeps it.
    with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
        conn.execute(insert, (first,))
        conn.execute(insert, (second,))
        conn.execute("SELECT 1 / 0")
    # A failure at commit time, on one worker only: its deferred unique constraint
    # fails at PREPARE TRANSACTION, so the other worker's prepared write is rolled back.
    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
        conn.execute(insert, (first,))
        conn.execute(insert, (second,))
        conn.execute(insert, (second,))
    assert conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    ).fetchone() == (0,)
    assert sum(rows_per_node(conn, table).values()) == 0
    assert conn.execute(
        "SELECT count(*) FROM run_command_on_workers('SELECT count(*) FROM pg_prepared_xacts')"
        " WHERE result <> '0'"
    ).fetchone() == (0,)


def test_distributed_function_runs_on_the_worker_of_its_owner(
    conn: psycopg.Connection[Any], names: list[str]
) -> None:
    table = names[0]
    distributed(conn, table)
    function = f"{table}_add"
    conn.execute(
        sql.SQL(
            """
            CREATE FUNCTION {function}(p_owner text, p_n int) RETURNS int
            LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO {table} VALUES (p_owner, p_n);
                RETURN current_setting('port')::int;
            END
            $$
            """
        ).format(function=sql.Identifier(function), table=sql.Identifier(table))
    )
    conn.execute(
        "SELECT create_distributed_function(%s, 'p_owner', colocate_with := %s)",
        (f"{function}(text, int)", table),
    )
    coordinator = conn.execute("SELECT current_setting('port')::int").fetchone()
    call = sql.SQL("SELECT {}(%s, %s)").format(sql.Identifier(function))
    first, second = owners_on_two_workers(conn, table)
    for owner in (first, second):
        # Outside a transaction block the call is pushed down whole to the owner's worker.
        ran_on = conn.execute(call, (owner, 1)).fetchone()
        assert ran_on == (node_of(conn, table, owner),)
        # Inside one it runs on the coordinator, which sends the INSERT to the worker.
        with conn.transaction():
            ran_on = conn.execute(call, (owner, 2)).fetchone()
        assert ran_on == coordinator
    rows = conn.execute(
        sql.SQL("SELECT owner_id, n FROM {} ORDER BY 1, 2").format(sql.Identifier(table))
    ).fetchall()
    assert rows == sorted([(first, 1), (first, 2), (second, 1), (second, 2)])
