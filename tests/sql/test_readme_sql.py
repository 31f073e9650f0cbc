"""The README's psql session works exactly as shown."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ledger_cli.pgserver import find_program

README = Path(__file__).resolve().parents[2] / "README.md"
PROMPT = "ledger=> "


def _session() -> list[tuple[str, list[str]]]:
    block = re.search(r"```psql\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no psql session"
    steps: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith(PROMPT):
            steps.append((line[len(PROMPT) :], []))
        elif line.strip():
            steps[-1][1].append(line.rstrip())
    return steps


def test_readme_psql_session(db_url):
    psql = find_program("psql")
    steps = _session()
    assert len(steps) >= 4
    for command, expected in steps:
        result = subprocess.run(
            [psql, "-X", "-d", db_url, "-c", command], capture_output=True, text=True, timeout=60
        )
        actual = [
            line.rstrip() for line in (result.stdout + result.stderr).splitlines() if line.strip()
        ]
        if expected[0].startswith("ERROR:"):
            assert result.returncode != 0
            assert actual[: len(expected)] == expected, command
        else:
            assert result.returncode == 0, result.stderr
            assert actual == expected, command
