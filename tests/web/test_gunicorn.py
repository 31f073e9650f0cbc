"""Served for real: gunicorn (web.gunicorn_conf: its gevent worker class
web.gunicorn_worker.LedgerWorker, web.wsgi:app) on a free loopback port,
talked to over HTTP; concurrent debits never overdraw. Slow and malformed
clients: test_slow_clients.py."""

from __future__ import annotations

import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.web.helpers import call


def test_gunicorn_serves_the_api(served: tuple[str, str]) -> None:
    base, token = served
    auth = {"Authorization": f"Bearer {token}"}
    status, _, health = call(base, "GET", "/health")
    assert (status, health) == (200, {"status": "healthy", "database": "ok"})
    status, _, body = call(
        base,
        "POST",
        "/ledger",
        {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5},
        {**auth, "Idempotency-Key": "g1"},
    )
    assert status == 201 and body["balance"] == 5
    status, headers, again = call(
        base,
        "POST",
        "/ledger",
        {"owner_id": "alice", "operation": "CREDIT_ADD", "amount": 5},
        {**auth, "Idempotency-Key": "g1"},
    )
    assert (status, headers["Idempotent-Replayed"], again) == (200, "true", body)
    assert call(base, "GET", "/balance/alice", headers=auth)[2]["balance"] == 5
    assert call(base, "GET", "/balance/alice")[0] == 401
    status, _, spec = call(base, "GET", "/openapi.json")
    assert status == 200 and "/ledger" in spec["paths"]
    # A file the app sends with wsgi.file_wrapper comes through whole.
    with urllib.request.urlopen(f"{base}/docs/assets/swagger-ui-bundle.js", timeout=10) as asset:
        content = asset.read()
        assert asset.status == 200 and len(content) == int(asset.headers["Content-Length"]) > 100_000


def test_concurrent_http_debits_never_overdraw(served: tuple[str, str], db_url: str) -> None:
    base, token = served
    auth = {"Authorization": f"Bearer {token}"}
    assert (
        call(
            base,
            "POST",
            "/ledger",
            {"owner_id": "hot", "operation": "CREDIT_ADD", "amount": 25},
            {**auth, "Idempotency-Key": "fund"},
        )[0]
        == 201
    )

    def debit(i: int) -> int:
        return call(
            base,
            "POST",
            "/ledger",
            {"owner_id": "hot", "operation": "CREDIT_SPEND", "amount": 1},
            {**auth, "Idempotency-Key": f"spend-{i}"},
        )[0]

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = Counter(pool.map(debit, range(40)))
    assert statuses == Counter({201: 25, 402: 15})
    assert call(base, "GET", "/balance/hot", headers=auth)[2]["balance"] == 0
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT * FROM ledger.verify()").fetchall() == []
        assert conn.execute(
            "SELECT min(balance) FROM ledger.entries WHERE owner_id = 'hot'"
        ).fetchone() == (0,)
