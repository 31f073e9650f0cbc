"""The console scenario of the benchmark (`python -m bench --console --quick`)
runs end to end and writes well-formed results. Structure, never speed: a
benchmark is not a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_console_scenario_writes_its_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--console", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "console-quick.json").read_text(encoding="utf-8"))
    assert results["plan"]["mode"] == "quick" and results["plan"]["entries"] == 2_000
    figures = results["figures"]
    assert set(figures) == {"balance_api", "owner_small", "owner_big", "owner_big_deep"}
    for values in figures.values():
        assert 0 < values["min_ms"] <= values["median_ms"] <= values["p90_ms"]
    assert figures["balance_api"]["to_baseline"] == 1.0
    report = (tmp_path / "console-quick.md").read_text(encoding="utf-8")
    assert "| GET /balance/{owner} with an API key (baseline) |" in report
