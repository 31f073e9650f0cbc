"""GET /metrics under gunicorn with two workers (web.gunicorn_conf, as `ledger
serve` runs it): every scrape, whichever worker answers it, sums both; a
worker that exits leaves the live gauges and keeps its counts; each start
gets a fresh directory, removed at exit."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

from tests.web.conftest import serving
from tests.web.helpers import call
from tests.web.test_monitoring import Samples, parse, value

REQUESTS = 40


def scrape(base: str) -> Samples:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        assert response.status == 200
        return parse(response.read().decode())


def worker_pids(directory: Path) -> set[int]:
    """The workers alive now: the ones with a live-gauge file (the pool's)."""
    return {
        int(m.group(1))
        for p in directory.iterdir()
        if (m := re.fullmatch(r"gauge_livesum_(\d+)\.db", p.name))
    }


def ledger_posts_of(directory: Path, pid: int) -> float:
    """What one worker counted itself: POST /ledger 201 in its own file."""
    path = directory / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    return sum(
        v
        for key, v, *_ in MmapedDict.read_all_values_from_file(str(path))
        if '"ledger_http_requests_total"' in key and '"/ledger"' in key and '"201"' in key
    )


def wait_for(condition, what: str, seconds: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_one_scrape_sums_both_workers(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serving(db_url, stderr=log, LEDGER_METRICS_DIR=str(tmp_path), LEDGER_LOG_LEVEL="info") as (
        base,
        token,
    ):
        [directory] = [p for p in tmp_path.iterdir() if p.name.startswith("ledger-metrics-")]
        # Each worker's pool may open 4 connections (LEDGER_POOL_SIZE): 8 only if both are summed.
        wait_for(lambda: len(worker_pids(directory)) == 2, "two workers")
        for _ in range(4):
            assert value(scrape(base), "ledger_pool_max") == 8

        auth = {"Authorization": f"Bearer {token}"}

        def credit(i: int) -> int:
            body = {"owner_id": f"o{i % 5}", "operation": "CREDIT_ADD", "amount": 1}
            headers = {**auth, "Idempotency-Key": f"k{i}", "X-Request-Id": f"load-{i}"}
            status, answered, _ = call(base, "POST", "/ledger", body, headers)
            assert answered["X-Request-Id"] == f"load-{i}"
            return status

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(credit, range(REQUESTS))) == {201}
        pids = worker_pids(directory)
        by_worker = {pid: ledger_posts_of(directory, pid) for pid in pids}
        assert sum(by_worker.values()) == REQUESTS
        assert all(n > 0 for n in by_worker.values()), f"one worker served everything: {by_worker}"
        # Whichever worker answers, the scrape counts every request of both.
        for _ in range(6):
            samples = scrape(base)
            assert (
                value(
                    samples,
                    "ledger_http_requests_total",
                    method="POST",
                    route="/ledger",
                    status="201",
                )
                == REQUESTS
            )
            assert (
                value(
                    samples,
                    "ledger_http_request_duration_seconds_count",
                    method="POST",
                    route="/ledger",
                )
                == REQUESTS
            )
            assert value(samples, "ledger_metrics_database_up") == 1

        # A worker ends: gunicorn starts another. Its counts stay; its pool leaves the sums.
        gone = min(pids)
        os.kill(gone, signal.SIGTERM)
        wait_for(
            lambda: gone not in worker_pids(directory) and len(worker_pids(directory)) == 2,
            "a new worker in place of the one that ended",
        )
        for _ in range(4):
            samples = scrape(base)
            assert value(samples, "ledger_pool_max") == 8
            assert (
                value(
                    samples,
                    "ledger_http_requests_total",
                    method="POST",
                    route="/ledger",
                    status="201",
                )
                == REQUESTS
            )
    assert not directory.exists()

    # The server's stderr: one JSON line per request, each with the id it was sent.
    requests = {}
    for text in log.read_text().splitlines():
        if text.startswith("{") and '"logger":"ledger.requests"' in text:
            line = json.loads(text)
            requests[line["request_id"]] = line
    for i in range(REQUESTS):
        line = requests[f"load-{i}"]
        assert (line["route"], line["status"], line["app"], line["ledger_fn"]) == (
            "/ledger",
            201,
            "example_app",
            "post_entry",
        )
    assert token not in log.read_text()
