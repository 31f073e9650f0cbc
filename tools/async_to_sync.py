"""Generate the synchronous client from the asynchronous one.

ledger_py/_client_async.py (AsyncLedger) is the one hand-written client;
this script writes ledger_py/_client_sync.py (Ledger) from it:

    python tools/async_to_sync.py           # write it (`make generate`)
    python tools/async_to_sync.py --check   # exit 1 and show the diff if the
                                            # file on disk is stale (`make lint`)

How: parse the source with the standard `ast` module, rewrite the tree,
print it with `ast.unparse`, then let ruff sort the imports and format the
result with the project's settings, so that the output is stable and
lint-clean. The rewrite:

- `async def` -> `def`, `await x` -> `x`, `async with` -> `with`,
  `async for` -> `for`, `async` comprehensions -> plain ones;
- every identifier, attribute and imported name found in NAME_MAP is
  renamed (AsyncLedger -> Ledger, AsyncConnectionPool -> ConnectionPool,
  `__aenter__` -> `__enter__`, ...); docstrings get the same renames as
  words, and lose `await ` and the `async ` of `async with` / `async for`;
- the marker: where the two clients genuinely differ, the source says
  `if _ASYNC: <async code> else: <sync code>` (or `if not _ASYNC: <sync code>`),
  and only the synchronous side is kept; the line `_ASYNC = True` is dropped.
  In a class body, `if not _ASYNC: __doc__ = "..."` gives the generated
  class its own docstring;
- the module docstring is replaced by one that names the source, and a
  header comment says the file is generated and how to regenerate it.
  Comments of the source are not carried over (`ast` does not keep them):
  read them in the source.

The generator refuses (exit 2) to write a file in which an async construct
or a name that looks asynchronous (Async*, async*, asyncio, __a*__) is
left, or a docstring still mentions one: add the name to NAME_MAP or put
the code under the marker.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "ledger_py/_client_async.py"
TARGET = "ledger_py/_client_sync.py"
COMMAND = "make generate"

MARKER = "_ASYNC"

# Asynchronous name -> synchronous name. Only what the source uses: a name
# missing here makes the generator stop with the name in its message.
NAME_MAP = {
    "AsyncLedger": "Ledger",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncConnection": "Connection",
    "AsyncIterator": "Iterator",
    "asynccontextmanager": "contextmanager",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
}

HEADER = f"""\
# GENERATED FILE: DO NOT EDIT.
# Generated from {SOURCE} by tools/async_to_sync.py; edit the source and run
# `{COMMAND}` (`make lint` fails when this file is out of date).
"""

MODULE_DOC = f"""Ledger, the synchronous client: generated from AsyncLedger ({SOURCE}).

The contract of both clients is described in ledger_py/client.py, the
module to import them from.
"""

_ASYNC_LOOKING = re.compile(r"^(Async|async|asyncio$|__a[a-z]+__$)")
_NAMES_IN_TEXT = re.compile(r"\b(" + "|".join(map(re.escape, NAME_MAP)) + r")\b")


def sync_text(text: str) -> str:
    """A docstring of the async source as the sync module should read it."""
    text = re.sub(r"\bawait\s+", "", text)
    text = re.sub(r"\basync (with|for)\b", r"\1", text)
    return _NAMES_IN_TEXT.sub(lambda m: NAME_MAP[m.group(1)], text)


def _is_marker(test: ast.expr) -> bool | None:
    """True for `_ASYNC`, False for `not _ASYNC`, None for any other test."""
    if isinstance(test, ast.Name) and test.id == MARKER:
        return True
    if (
        isinstance(test, ast.UnaryOp)
        and isinstance(test.op, ast.Not)
        and isinstance(test.operand, ast.Name)
        and test.operand.id == MARKER
    ):
        return False
    return None


def _docstring_node(body: list[ast.stmt]) -> ast.Constant | None:
    if body and isinstance(body[0], ast.Expr):
        value = body[0].value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value
    return None


class AsyncToSync(ast.NodeTransformer):
    """The rewrite of one module's tree (see the module docstring)."""

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self.generic_visit(node)
        fields = {name: getattr(node, name) for name in node._fields}
        fields["name"] = NAME_MAP.get(node.name, node.name)
        return ast.copy_location(ast.FunctionDef(**fields), node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.name = NAME_MAP.get(node.name, node.name)
        return node

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        fields = {name: getattr(node, name) for name in node._fields}
        return ast.copy_location(ast.With(**fields), node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        self.generic_visit(node)
        fields = {name: getattr(node, name) for name in node._fields}
        return ast.copy_location(ast.For(**fields), node)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        value: ast.AST = self.visit(node.value)
        return value

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        self.generic_visit(node)
        node.is_async = 0
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = NAME_MAP.get(node.id, node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        node.attr = NAME_MAP.get(node.attr, node.attr)
        return node

    def visit_alias(self, node: ast.alias) -> ast.AST:
        node.name = NAME_MAP.get(node.name, node.name)
        return node

    def visit_If(self, node: ast.If) -> ast.AST | list[ast.stmt] | None:
        marker = _is_marker(node.test)
        if marker is None:
            self.generic_visit(node)
            return node
        kept = node.orelse if marker else node.body
        result: list[ast.stmt] = []
        for statement in kept:
            visited = self.visit(statement)
            if isinstance(visited, list):
                result.extend(visited)
            elif visited is not None:
                result.append(visited)
        return result or None

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        if [t.id for t in node.targets if isinstance(t, ast.Name)] == [MARKER]:
            return None  # `_ASYNC = True`
        self.generic_visit(node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.generic_visit(node)
        node.name = NAME_MAP.get(node.name, node.name)
        # `if not _ASYNC: __doc__ = "..."` became a plain assignment: make it
        # the class docstring.
        for index, statement in enumerate(node.body):
            if (
                isinstance(statement, ast.Assign)
                and [t.id for t in statement.targets if isinstance(t, ast.Name)] == ["__doc__"]
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            ):
                del node.body[index]
                doc = ast.Expr(value=ast.Constant(value=statement.value.value))
                if _docstring_node(node.body) is not None:
                    node.body[0] = doc
                else:
                    node.body.insert(0, doc)
                break
        return node


def _map_docstrings(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            doc = _docstring_node(node.body)
            if doc is not None and isinstance(doc.value, str):
                doc.value = sync_text(doc.value)


def _leftovers(tree: ast.Module) -> list[str]:
    """What still looks asynchronous in the rewritten tree."""
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.AsyncFunctionDef | ast.AsyncWith | ast.AsyncFor | ast.Await):
            found.append(f"line {line}: {type(node).__name__}")
        names: list[str] = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.alias):
            names = list(dict.fromkeys([node.name, *node.name.split(".")]))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names = [node.name]
        found += [f"line {line}: name {n!r}" for n in names if _ASYNC_LOOKING.match(n)]
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            doc = _docstring_node(node.body)
            text = doc.value if doc is not None and isinstance(doc.value, str) else ""
            if re.search(r"\b(Async\w*|async|await|asyncio)\b", text):
                found.append(f"line {line}: docstring of {node.name} mentions async code")
    return found


def transform(source: str) -> str:
    """The rewritten module as unformatted Python source (without the header)."""
    tree = ast.parse(source)
    tree = AsyncToSync().visit(tree)
    assert isinstance(tree, ast.Module)
    doc = _docstring_node(tree.body)
    if doc is None:
        tree.body.insert(0, ast.Expr(value=ast.Constant(value=MODULE_DOC)))
    else:
        doc.value = MODULE_DOC
    _map_docstrings(tree)
    ast.fix_missing_locations(tree)
    leftovers = _leftovers(tree)
    if leftovers:
        raise SystemExit(
            "async_to_sync: the generated code would still be asynchronous:\n  "
            + "\n  ".join(leftovers)
            + "\nadd the name to NAME_MAP in tools/async_to_sync.py or use the _ASYNC marker"
        )
    return ast.unparse(tree) + "\n"


def _ruff() -> str:
    beside = Path(sys.executable).parent / "ruff"
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        raise SystemExit("async_to_sync: ruff is needed to format the output (pip install ruff)")
    return found


def ruff_format(code: str) -> str:
    """Sort the imports and format `code` as ruff does for the target file."""
    ruff = _ruff()
    for args in (["check", "--select", "I", "--fix", "--quiet"], ["format", "--quiet"]):
        done = subprocess.run(
            [ruff, *args, "--stdin-filename", TARGET, "-"],
            input=code,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"async_to_sync: ruff {args[0]} failed:\n{done.stderr}{done.stdout}")
        code = done.stdout
    return code


def generate(source: str) -> str:
    """The complete text of the generated module."""
    return ruff_format(HEADER + transform(source))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"write nothing; exit 1 with a diff when {TARGET} is not what the source gives",
    )
    options = parser.parse_args(argv)
    wanted = generate((ROOT / SOURCE).read_text(encoding="utf-8"))
    target = ROOT / TARGET
    if not options.check:
        target.write_text(wanted, encoding="utf-8")
        print(f"wrote {TARGET} from {SOURCE}")
        return 0
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    if current == wanted:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=f"{TARGET} (on disk)",
            tofile=f"{TARGET} (generated from {SOURCE})",
        )
    )
    print(
        f"\n{TARGET} is out of date with {SOURCE}: run `{COMMAND}` "
        "(python tools/async_to_sync.py) and commit the result.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
