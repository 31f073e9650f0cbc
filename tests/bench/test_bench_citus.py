"""The Citus scenario of the benchmark (`python -m bench --citus --quick`)
runs end to end on the local 3-node cluster and writes well-formed results.

Structure, never speed: a benchmark is not a test. It needs Citus: where
Citus is not installed it is skipped with the reason, and under CI (`CI`
set) that is a failure instead, as for the contract tests on the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.citus import cluster

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("post_entry_delegated", "post_entry_in_transaction", "transfer_across_workers")


@pytest.fixture(scope="module")
def citus_quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    try:
        cluster.require_citus()
    except cluster.CitusUnavailable as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (CI must install it before the suite)")
        pytest.skip(str(missing))
    out = tmp_path_factory.mktemp("bench-citus")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--citus", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "citus-quick.json").read_text(encoding="utf-8")), out


def test_every_node_and_the_plain_server_were_durable(citus_quick: tuple[dict, Path]) -> None:
    settings = citus_quick[0]["settings"]
    assert set(settings["plain"]) == {"server"}
    assert set(settings["citus"]) == {"coordinator", "worker1", "worker2"}
    for nodes in settings.values():
        for values in nodes.values():
            assert values["fsync"] == "on" and values["synchronous_commit"] == "on"


def test_each_call_has_a_ratio_and_its_reason(citus_quick: tuple[dict, Path]) -> None:
    results, out = citus_quick
    plan = results["plan"]
    assert plan["mode"] == "quick" and plan["runs"] == 1
    assert plan["clients"] == 8
    assert list(results["scenarios"]) == list(SCENARIOS)
    for key in SCENARIOS:
        sc = results["scenarios"][key]
        assert sc["status"] == "ok", (key, sc["error"])
        assert sc["ratio"] > 0 and len(sc["per_round"]) == 1
        assert sc["why"]
        for side in ("plain", "citus"):
            assert sc[side]["rate"] > 0
            assert 0 < sc[side]["p50_ms"] <= sc[side]["p99_ms"]
        assert set(sc["citus"]["wal_per_call"]) == {"coordinator", "worker1", "worker2"}
        assert set(sc["plain"]["wal_per_call"]) == {"server"}
    markdown = (out / "citus-quick.md").read_text(encoding="utf-8")
    assert "| call | Citus / plain | per round |" in markdown
    assert "fsync=on" in markdown and "synchronous_commit=on" in markdown


def test_post_entry_is_one_call_on_the_owners_worker_in_a_transaction_block_or_not(
    citus_quick: tuple[dict, Path],
) -> None:
    """The entry point ledger.post_entry runs on the coordinator; the call
    of ledger_shard.post_entry it makes is sent whole to one worker."""
    for where, sent in citus_quick[0]["routing"].items():
        calls = [c for c in sent.split("; ") if "ledger_shard.post_entry(" in c]
        assert len(calls) == 1, (where, sent)
        node = calls[0].split(" -> ")[1]
        assert all(c.endswith(f" -> {node}") for c in sent.split("; ")), (where, sent)
