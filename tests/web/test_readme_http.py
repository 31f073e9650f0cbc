"""The README's HTTP session is replayed with curl against a real server on a
fresh database: each command must print what the README shows (times and
the database role aside)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
VOLATILE = re.compile(r'"(created_at|updated_at|expires_at|closed_at|created_by)":"[^"]*"')


def http_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("<!-- section: http -->") : text.index("<!-- /section: http -->")]


def fenced(section: str, language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no ```{language} block in the README's HTTP section"
    return match.group(1)


def session() -> list[tuple[str, str]]:
    """(command, expected output) pairs of the console block."""
    pairs: list[tuple[str, str]] = []
    for line in fenced(http_section(), "console").splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], ""))
        else:
            command, output = pairs[-1]
            pairs[-1] = (command, output + line + "\n")
    return pairs


def normalized(text: str) -> str:
    return VOLATILE.sub(lambda m: f'"{m.group(1)}":"..."', text).strip()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_http_session_runs_as_shown(served: tuple[str, str]) -> None:
    base, token = served
    lines = fenced(http_section(), "bash").splitlines()
    prelude = [line for line in lines if not line.startswith("export ")]
    pairs = session()
    assert len(pairs) >= 10
    script = list(prelude)
    for index, (command, _) in enumerate(pairs):
        script += [f"echo '@@@{index}'", command]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env={**os.environ, "BASE": base, "LEDGER_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    outputs = result.stdout.split("@@@")[1:]
    assert len(outputs) == len(pairs), result.stderr
    for (command, expected), output in zip(pairs, outputs, strict=True):
        printed = output.partition("\n")[2]
        assert normalized(printed) == normalized(expected), command
