"""The benchmark's quick mode runs end to end and writes well-formed results.

This asserts structure, never speed: a benchmark is not a test. It keeps
bench/ from rotting as the functions, the wrapper and the web app change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ledger_cli.pgserver import PostgresBinariesMissing, find_program

REPO = Path(__file__).resolve().parents[2]

# The scenarios that need only PostgreSQL and this repository's SQL.
ALWAYS_RUN = (
    "floor_function",
    "tpcb_like",
    "select_only",
    "one_row_update",
    "floor_uniform",
    "floor_hot",
    "floor_grants_uniform",
    "floor_grants_hot",
    "floor_full_uniform",
    "floor_full_hot",
    "post_entry_uniform",
    "post_entry_hot",
    "transfer_uniform",
    "get_balance",
    "post_entry_single_client",
    "python_raw",
    "debit_never_expiring",
    "debit_expiring",
    "expire_grants_1",
    "expire_grants_2",
)
# Those that wait for code written elsewhere: run when it exists.
WHEN_AVAILABLE = ("post_entries_batch", "python_wrapper", "http_post_ledger", "http_get_balance")


def _pgbench() -> str | None:
    try:
        return shutil.which("pgbench") or find_program("pgbench")
    except PostgresBinariesMissing:
        return None


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    if _pgbench() is None:
        pytest.skip("pgbench is not installed (postgresql-client / postgresql-contrib)")
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "quick.json").read_text(encoding="utf-8"))
    return results, out, proc.stdout


def test_quick_run_writes_json_and_markdown(quick_results: tuple[dict, Path, str]) -> None:
    results, out, stdout = quick_results
    assert results["schema_version"] == 1
    assert results["plan"]["mode"] == "quick"
    assert results["plan"]["clients"] == 8
    markdown = (out / "quick.md").read_text(encoding="utf-8")
    assert "| ratio | measured | target | verdict | per round | note |" in markdown
    assert "fsync=on" in markdown and "synchronous_commit=on" in markdown
    assert "post_entry uniform / bare floor uniform" in stdout


def test_server_was_durable_and_described(quick_results: tuple[dict, Path, str]) -> None:
    results, _, _ = quick_results
    settings = results["server_settings"]
    assert settings["fsync"] == "on"
    assert settings["synchronous_commit"] == "on"
    for name in ("shared_buffers", "wal_level", "max_wal_size", "server_version", "version"):
        assert settings[name]
    assert results["machine"]["cores"] >= 1


def test_every_scenario_ran_or_says_why_not(quick_results: tuple[dict, Path, str]) -> None:
    scenarios = results_scenarios = quick_results[0]["scenarios"]
    assert set(ALWAYS_RUN + WHEN_AVAILABLE) <= set(results_scenarios)
    for key in ALWAYS_RUN:
        sc = scenarios[key]
        assert sc["status"] == "ok", (key, sc["note"])
        assert sc["rate"] > 0
        assert 0 < sc["p50_ms"] <= sc["p99_ms"]
        assert len(sc["runs"]) == 1
    for key in WHEN_AVAILABLE:
        sc = scenarios[key]
        assert sc["status"] in ("ok", "skipped"), (key, sc["note"])
        if sc["status"] == "skipped":
            assert sc["note"], key
        else:
            assert sc["rate"] > 0
    # Growth is the long part: the full run only.
    assert not any(key.startswith("growth_") for key in scenarios)


def test_targets_carry_value_threshold_and_verdict(quick_results: tuple[dict, Path, str]) -> None:
    targets = quick_results[0]["targets"]
    titles = [t["title"] for t in targets]
    assert "post_entry uniform / full floor uniform (account, entry, grant, event rows)" in titles
    assert "get_balance / select-only" in titles
    assert len(titles) == len(set(titles)) >= 10
    for t in targets:
        assert t["kind"] in ("ratio", "latency_ms", "memory_mb")
        assert t["target"].startswith((">=", "<=", "<"))
        if t["value"] is None:
            assert t["pass"] is None and t["note"]
        else:
            assert isinstance(t["pass"], bool)
            assert t["value"] > 0
    by_pair = {(t.get("numerator"), t.get("denominator")): t for t in targets}
    for pair in (
        ("post_entry_uniform", "floor_full_uniform"),
        ("post_entry_hot", "floor_full_hot"),
        ("debit_expiring", "debit_never_expiring"),
    ):
        assert by_pair[pair]["value"] is not None, pair
    assert by_pair[("debit_expiring", "debit_never_expiring")]["threshold"] == 0.8


def test_expiry_scenarios_count_grants(quick_results: tuple[dict, Path, str]) -> None:
    results = quick_results[0]
    due = results["plan"]["due_grants"]
    for key, sessions in (("expire_grants_1", 1), ("expire_grants_2", 2)):
        sc = results["scenarios"][key]
        assert sc["unit"] == "grants/s" and sc["clients"] == sessions
        assert [run["count"] for run in sc["runs"]] == [due]
        assert sc["calls_per_run"][0] >= due // 1000


def test_diagnostic_ratios_come_without_a_verdict(quick_results: tuple[dict, Path, str]) -> None:
    results, out, _ = quick_results
    diagnostics = {d["title"]: d for d in results["diagnostics"]}
    call_form = diagnostics["bare floor in a function / bare floor (the call form alone)"]
    assert call_form["value"] is not None and call_form["value"] > 0
    assert all("pass" not in d and "threshold" not in d for d in diagnostics.values())
    assert "Diagnostic ratios (no target)" in (out / "quick.md").read_text(encoding="utf-8")


def test_chart_when_matplotlib_is_installed(quick_results: tuple[dict, Path, str]) -> None:
    results, out, _ = quick_results
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert results["chart"] is None and "matplotlib" in results["chart_note"]
        return
    png = out / results["chart"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
