"""The example app over a real gunicorn (2 workers, 4 threads each): races
that only real concurrency shows."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from tests.web.helpers import bearer, call

PARALLEL = 32


def test_parallel_identical_content_creations_make_one_content_and_one_charge(
    served: tuple[str, str], db_url: str
) -> None:
    """32 identical POST /content with one Idempotency-Key, released together:
    every one gets the content (one 201, the others 200 replays). Two of them
    used to get 500 (a UniqueViolation on the content's hold id: both had
    captured the one hold, the second as a replay, and both inserted)."""
    base, token = served
    assert (
        call(
            base,
            "POST",
            "/ledger",
            {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 100},
            bearer(token, **{"Idempotency-Key": "fund"}),
        )[0]
        == 201
    )
    for round_ in range(3):
        key = f"post-{round_}"
        start = threading.Barrier(PARALLEL)

        def create(_: int, key: str = key, start: threading.Barrier = start) -> Any:
            start.wait()
            return call(
                base,
                "POST",
                "/content",
                {"owner_id": "alice", "title": "T", "body": "B"},
                bearer(token, **{"Idempotency-Key": key}),
            )

        with ThreadPoolExecutor(PARALLEL) as pool:
            answers = list(pool.map(create, range(PARALLEL)))
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200] * (PARALLEL - 1) + [201], Counter(statuses)
        assert all(h.get("Idempotent-Replayed") == "true" for s, h, _ in answers if s == 200)
        bodies = [body for _, _, body in answers]
        assert all(body == bodies[0] for body in bodies), bodies
    with psycopg.connect(db_url) as conn:
        contents = conn.execute("SELECT count(*) FROM example_app.content").fetchone()
        charges = conn.execute(
            "SELECT count(*), sum(amount) FROM ledger.entries WHERE operation = 'CONTENT_CREATION'"
        ).fetchone()
    assert contents == (3,)
    assert charges == (3, -15)
    status, _, balance = call(base, "GET", "/balance/alice", headers=bearer(token))
    assert (status, balance["balance"], balance["held"]) == (200, 85, 0)


def test_parallel_first_accesses_of_one_reader_charge_once(
    served: tuple[str, str], db_url: str
) -> None:
    """The access key (an HMAC of the pair) makes racing first accesses one
    charge: one 201, the others 200 with charged false."""
    base, token = served
    for owner, amount in (("alice", 5), ("bob", 3)):
        assert (
            call(
                base,
                "POST",
                "/ledger",
                {"owner_id": owner, "operation": "CREDIT_ADD", "amount": amount},
                bearer(token, **{"Idempotency-Key": f"fund-{owner}"}),
            )[0]
            == 201
        )
    status, _, created = call(
        base,
        "POST",
        "/content",
        {"owner_id": "alice", "title": "T", "body": "B"},
        bearer(token, **{"Idempotency-Key": "c"}),
    )
    assert status == 201
    path = f"/content/{created['content']['content_id']}/access"
    start = threading.Barrier(PARALLEL)

    def read(_: int) -> Any:
        start.wait()
        return call(base, "POST", path, {"owner_id": "bob"}, bearer(token))

    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = list(pool.map(read, range(PARALLEL)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * (PARALLEL - 1) + [201], Counter(statuses)
    assert sum(body["charged"] for _, _, body in answers) == 1
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM ledger.entries WHERE operation = 'CONTENT_ACCESS'"
        ).fetchone() == (1,)
    assert call(base, "GET", "/balance/bob", headers=bearer(token))[2]["balance"] == 2
