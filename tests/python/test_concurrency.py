"""One Ledger shared by many threads (or tasks): the pool hands each call its
own connection, and the database's row lock decides who gets the credits."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ledger_py import AsyncLedger, Entry, InsufficientCredits, Ledger

WORKERS = 8
CALLS_EACH = 10
CREDITS = 50


def spend(ledger: Ledger, worker: int) -> list[str]:
    outcomes = []
    for i in range(CALLS_EACH):
        try:
            ledger.post_entry(
                owner_id="shared",
                app="core",
                operation="CREDIT_SPEND",
                idempotency_key=f"w{worker}-{i}",
            )
            outcomes.append("spent")
        except InsufficientCredits:
            outcomes.append("refused")
    return outcomes


def test_threads_share_one_ledger_without_overdraft(db_url: str) -> None:
    with Ledger(db_url, min_size=2, max_size=WORKERS) as ledger:
        ledger.post_entry(
            owner_id="shared",
            app="core",
            operation="CREDIT_ADD",
            idempotency_key="fund",
            amount=CREDITS,
        )
        with ThreadPoolExecutor(WORKERS) as pool:
            outcomes = [
                o for result in pool.map(lambda w: spend(ledger, w), range(WORKERS)) for o in result
            ]
        assert outcomes.count("spent") == CREDITS
        assert outcomes.count("refused") == WORKERS * CALLS_EACH - CREDITS
        assert ledger.get_balance(owner_id="shared").balance == 0
        assert ledger.verify() == []


def test_tasks_share_one_async_ledger_without_overdraft(db_url: str) -> None:
    async def scenario() -> None:
        async with AsyncLedger(db_url, min_size=2, max_size=WORKERS) as ledger:
            await ledger.post_entry(
                owner_id="shared",
                app="core",
                operation="CREDIT_ADD",
                idempotency_key="fund",
                amount=CREDITS,
            )

            async def one(key: str) -> Any:
                try:
                    return await ledger.post_entry(
                        owner_id="shared", app="core", operation="CREDIT_SPEND", idempotency_key=key
                    )
                except InsufficientCredits as exc:
                    return exc

            results = await asyncio.gather(*(one(f"t{i}") for i in range(WORKERS * CALLS_EACH)))
            assert sum(isinstance(r, Entry) for r in results) == CREDITS
            assert (
                sum(isinstance(r, InsufficientCredits) for r in results)
                == WORKERS * CALLS_EACH - CREDITS
            )
            assert (await ledger.get_balance(owner_id="shared")).balance == 0
            assert await ledger.verify() == []

    asyncio.run(scenario())
