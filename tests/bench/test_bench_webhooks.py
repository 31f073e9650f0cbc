"""The webhook scenario of the benchmark (`python -m bench --webhooks --quick`)
runs end to end and writes well-formed results. Structure, never speed: a
benchmark is not a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_webhook_scenario_writes_its_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--webhooks", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "webhooks-quick.json").read_text(encoding="utf-8"))
    assert results["plan"]["mode"] == "quick" and results["plan"]["runs"] == 1
    assert results["settings"]["fsync"] == "on"
    [round_] = results["rounds"]
    for key in ("one", "four", "bare_one", "bare_four"):
        run = round_[key]
        # Every event arrived, each once (the receiver counts distinct webhook-ids).
        assert run["distinct"] == run["events"] == results["plan"]["events"], (key, run)
        assert run["rate"] > 0
    for poll, figures in round_["latency"].items():
        assert figures["events"] > 0 and figures["p50_ms"] <= figures["p99_ms"], poll
    summary = results["summary"]
    assert set(summary) >= {"one", "four", "four_to_one", "one_to_bare", "latency"}
    report = (tmp_path / "webhooks-quick.md").read_text(encoding="utf-8")
    assert "| 1 dispatcher |" in report and "| 4 dispatchers |" in report
    assert "| 0.5 s (default) |" in report
    assert not list(tmp_path.glob("*.receipts"))
