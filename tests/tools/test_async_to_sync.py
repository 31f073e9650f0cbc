"""The generator of the synchronous client (tools/async_to_sync.py): what it
rewrites, its marker, and what it refuses, and that ledger_py/_client_sync.py
is what it writes now (also checked by `make lint`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.async_to_sync import MODULE_DOC, sync_text, transform


def rewrite(source: str) -> str:
    return transform(textwrap.dedent(source))


def test_async_constructs_become_synchronous() -> None:
    out = rewrite(
        """
        from contextlib import asynccontextmanager
        from psycopg_pool import AsyncConnectionPool

        class AsyncLedger:
            async def __aenter__(self) -> AsyncLedger:
                await self.open()
                return self

            @asynccontextmanager
            async def rows(self, pool: AsyncConnectionPool) -> list[int]:
                async with pool.connection() as conn:
                    async for row in conn.stream('SELECT 1'):
                        yield [x async for x in row]
                return int((await conn.one())[0])
        """
    )
    assert "async" not in out.replace(MODULE_DOC, "") and "await" not in out
    assert "from contextlib import contextmanager" in out
    assert "from psycopg_pool import ConnectionPool" in out
    assert "class Ledger:" in out
    assert "def __enter__(self) -> Ledger:" in out
    assert "with pool.connection() as conn:" in out
    assert "for row in conn.stream('SELECT 1'):" in out
    assert "[x for x in row]" in out
    assert "return int(conn.one()[0])" in out


def test_the_marker_keeps_the_synchronous_side_only() -> None:
    out = rewrite(
        '''
        _ASYNC = True

        class AsyncLedger:
            """For asyncio code: `async with AsyncLedger(url)`."""

            if not _ASYNC:
                __doc__ = """For threads: the pool is shared."""

            async def pause(self) -> None:
                if _ASYNC:
                    await asyncio.sleep(1)
                else:
                    time.sleep(1)
        '''
    )
    assert "_ASYNC" not in out and "asyncio" not in out
    assert '"""For threads: the pool is shared."""' in out
    assert "__doc__" not in out
    assert "time.sleep(1)" in out


def test_docstrings_read_as_synchronous_code() -> None:
    text = "Opens on `async with`, on `await open()`; see AsyncLedger.__aenter__."
    assert sync_text(text) == "Opens on `with`, on `open()`; see Ledger.__enter__."


def test_the_module_docstring_names_the_source() -> None:
    assert rewrite('"""AsyncLedger, by hand."""\nx = 1\n').startswith(f'"""{MODULE_DOC}"""')


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio\n",
        "async def f(p: AsyncCursor) -> None: ...\n",
        "def f() -> None:\n    x.__anext__()\n",
        'class AsyncThing:\n    """Awaits nothing."""\n',
        'def f() -> None:\n    """Use it with an async framework."""\n',
    ],
    ids=["asyncio", "unmapped-name", "dunder", "unmapped-class", "docstring"],
)
def test_what_would_stay_asynchronous_stops_the_generator(source: str) -> None:
    with pytest.raises(SystemExit, match="would still be asynchronous"):
        transform(source)


def test_the_generated_client_is_current() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "tools/async_to_sync.py", "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
