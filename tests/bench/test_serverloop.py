"""The server-side loop diagnostic runs and reports a time per call for each
statement (structure only, never speed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_serverloop_reports_each_statement() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.serverloop", "floor", "post_entry", "transfer",
         "--calls", "20", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.strip().splitlines()[-1]
    found = dict(re.findall(r"(\w+) ([0-9.]+)", line.split(":", 1)[1]))
    assert set(found) == {"floor", "post_entry", "transfer"}
    assert all(float(v) > 0 for v in found.values())
