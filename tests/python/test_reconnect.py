"""A server that goes away gives LedgerUnavailable; once it is back (same
data), the same Ledger serves again without being rebuilt.

Runs on a private throwaway server (the shared one must stay up): stopped
with terminate() (keeps the data folder) and started again on its port.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ledger_cli.pgserver import throwaway_server
from ledger_py import Ledger, LedgerUnavailable
from ledger_py._client_common import _has_input
from ledger_py.migrate import migrate

from .conftest import make_ledger


@pytest.fixture(scope="module")
def private_server() -> Iterator[Any]:
    server = throwaway_server()
    try:
        migrate(server.url(database="test"))
        yield server
    finally:
        server.stop()


def wait_until_port_is_free(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.1)
    raise AssertionError(f"port {port} still busy")


def first_success(call: Any, timeout: float = 30.0) -> tuple[Any, float]:
    """The first successful result of call() and how long it took to get it."""
    started = time.monotonic()
    while True:
        try:
            return call(), time.monotonic() - started
        except LedgerUnavailable:
            if time.monotonic() - started > timeout:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ledger_survives_a_server_restart(private_server: Any, kind: str) -> None:
    url = private_server.url(database="test")
    port = private_server.settings["port"]
    owner = f"restart-{kind}"
    ledger = make_ledger(kind, url, min_size=2, max_size=2, timeout=1.0)
    try:
        ledger.post_entry(
            owner_id=owner,
            app="core",
            operation="CREDIT_ADD",
            idempotency_key=f"{owner}-1",
            amount=5,
        )

        private_server.terminate()
        wait_until_port_is_free(port)
        for _ in range(2):  # a dead pooled connection, then no connection at all
            with pytest.raises(LedgerUnavailable) as caught:
                ledger.get_balance(owner_id=owner)
            assert "127.0.0.1" in str(caught.value) and str(port) in str(caught.value)

        private_server.start()
        balance, waited = first_success(lambda: ledger.get_balance(owner_id=owner))
        assert balance.balance == 5  # same data
        print(f"served again after {waited:.2f} s")
        assert waited < 15.0
        entry = ledger.post_entry(
            owner_id=owner,
            app="core",
            operation="CREDIT_ADD",
            idempotency_key=f"{owner}-2",
            amount=1,
        )
        assert entry.balance == 6
    finally:
        ledger.close()


def fill_pool(ledger: Any, kind: str) -> None:
    """Wait until the pool holds its min_size connections (all idle then)."""
    if kind == "sync":
        ledger.pool.wait(timeout=10)
    else:
        ledger.run(ledger.pool.wait(timeout=10))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_first_calls_after_an_idle_restart_succeed(private_server: Any, kind: str) -> None:
    """The server restarts while the pool's connections sit idle: each of them
    is dead. A zero-timeout poll at checkout finds them (an idle healthy
    connection has nothing to read) and the call runs on a new one."""
    url = private_server.url(database="test")
    port = private_server.settings["port"]
    owner = f"idle-restart-{kind}"
    ledger = make_ledger(kind, url, min_size=3, max_size=3, timeout=5.0)
    try:
        ledger.post_entry(
            owner_id=owner,
            app="core",
            operation="CREDIT_ADD",
            idempotency_key=f"{owner}-k0",
            amount=5,
        )
        fill_pool(ledger, kind)

        private_server.terminate(signal.SIGINT)  # fast shutdown: it ends every session
        wait_until_port_is_free(port)
        private_server.start()

        assert ledger.get_balance(owner_id=owner).balance == 5  # the very first call
        for n in range(1, 5):
            entry = ledger.post_entry(
                owner_id=owner,
                app="core",
                operation="CREDIT_ADD",
                idempotency_key=f"{owner}-k{n}",
                amount=1,
            )
            assert not entry.replayed
        assert entry.balance == 5 + 4
    finally:
        ledger.close()


def test_a_healthy_idle_connection_is_not_replaced(private_server: Any) -> None:
    """The checkout check costs no round trip and keeps a live connection."""
    url = private_server.url(database="test")
    with Ledger(url, min_size=1, max_size=1) as ledger:
        with ledger.connection() as first:
            pid = first.info.backend_pid
        ledger.get_balance(owner_id="anyone")
        with ledger.connection() as again:
            assert again.info.backend_pid == pid


def test_a_live_connection_with_input_waiting_passes_the_real_check(private_server: Any) -> None:
    """Input on an idle connection is not proof of death (a NOTIFY for a
    LISTEN of the app's): the connection gets a real check and is kept."""
    url = private_server.url(database="test")
    with Ledger(url, min_size=1, max_size=1) as ledger:
        with ledger.connection() as first:
            pid = first.info.backend_pid
            first.execute("LISTEN ledger_test_channel")
        with psycopg.connect(url, autocommit=True) as notifier:
            notifier.execute("NOTIFY ledger_test_channel")
        time.sleep(0.2)
        with ledger.pool.connection() as raw:  # the pool's own checkout: no check
            assert _has_input(raw)
        with ledger.connection() as again:
            assert again.info.backend_pid == pid
        assert ledger.get_balance(owner_id="anyone").balance == 0
