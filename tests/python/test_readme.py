"""The README's Python examples run as written, against a fresh database.

The blocks of the Python section run in order in one namespace (as a reader
would paste them), with the example URL replaced by the test database's; each
`print(...)  # expected` line must print what its comment says.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_URL = "postgresql://ledger:secret@localhost:5432/ledger"


def python_section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- section: python -->(.*?)<!-- /section: python -->", text, re.S)
    assert match, "README.md has no python section"
    return match.group(1)


def code_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_examples_run_as_written(db_url: str) -> None:
    blocks = code_blocks(python_section())
    assert len(blocks) >= 4
    source = "\n".join(blocks)
    assert EXAMPLE_URL in source
    expected = [m.group(1).strip() for m in re.finditer(r"^\s*print\(.*\)\s+# (.*)$", source, re.M)]
    assert expected, "the examples show their output"

    output = io.StringIO()
    namespace: dict[str, object] = {"__name__": "readme"}
    with contextlib.redirect_stdout(output):
        for block in blocks:
            exec(compile(block.replace(EXAMPLE_URL, db_url), str(README), "exec"), namespace)
    assert output.getvalue().splitlines() == expected
