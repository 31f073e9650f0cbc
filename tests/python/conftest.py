"""Fixtures of the ledger_py tests.

`ledger` is parametrized over both classes: the async variant runs the
AsyncLedger's coroutines on a private event loop behind the same method
names, so every shared scenario exercises both classes' own code.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ledger_py import AsyncLedger, Ledger


class AsyncLedgerRunner:
    """An AsyncLedger driven from synchronous test code, one coroutine at a time."""

    def __init__(self, url: str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.ledger = AsyncLedger(url, **options)
        self.run(self.ledger.open())

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.ledger, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(attribute(*args, **kwargs))

        return call

    def close(self) -> None:
        try:
            self.run(self.ledger.close())
        finally:
            self.loop.close()


def make_ledger(kind: str, url: str, **options: Any) -> Any:
    options.setdefault("min_size", 1)
    options.setdefault("max_size", 4)
    if kind == "sync":
        ledger = Ledger(url, **options)
        ledger.open()  # as the async runner does: some tests use the pool directly
        return ledger
    return AsyncLedgerRunner(url, **options)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ledger(kind: str, db_url: str) -> Iterator[Any]:
    """A Ledger, or an AsyncLedger behind the same synchronous method names."""
    instance = make_ledger(kind, db_url)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def keys() -> Callable[[], str]:
    """Fresh idempotency keys."""
    counter = iter(range(1_000_000))
    return lambda: f"key-{next(counter)}"
