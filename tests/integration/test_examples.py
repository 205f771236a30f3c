"""The fenced ```python examples of the package's docstrings and of docs/*.md, run.

Every block is one test, named ``path:line`` of the block. The blocks of one docstring (or of one
docs page) run in order in one namespace, as a reader reads them: a later block may use what an
earlier one defined. Each group runs in its own temporary working directory, offline, on the
session's Prefect API (a flow an example starts is ~1-3 s).

The one way to keep a block from running is a visible first line in the block itself, for an
example that needs what a test cannot have (a server of its own, a real key, the network)::

    # example: not run (needs a real OPENAI_API_KEY)

``examples_not_yet_runnable.tsv`` (beside this file) lists the blocks that are skipped where
the block itself cannot say so: examples that start a Prefect (or PostgreSQL) server of their
own, and the block example form that Prefect's standard block tests check, which loads a saved
block (``skip``, with the reason shown). Make a block run, then delete its line: the list only
shrinks.
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^([ \t]*)```python[ \t]*\n(.*?)^\1```", re.S | re.M)
NOT_RUN = re.compile(r"^#\s*example:\s*not run\s*\((?P<why>[^)]*)\)")


@dataclass(frozen=True)
class Example:
    group: str  # the docstring or docs page: its blocks share a namespace
    where: str  # path:line of the block
    code: str
    key: tuple[str, str] = ("", "")  # (path, first code line [#N]): what the .tsv names it by

    @property
    def not_run(self) -> str | None:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        match = NOT_RUN.match(first)
        return match["why"] if match else None


def _blocks(text: str, first_line: int) -> list[tuple[int, str]]:
    found = []
    for match in FENCE.finditer(text):
        indent = match.group(1)
        lines = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in match[2].splitlines()]
        found.append((first_line + text[: match.start()].count("\n") + 1, "\n".join(lines)))
    return found


def _docstring_line(node: ast.AST) -> int:
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        return body[0].lineno - 1
    return 0


def collect() -> list[Example]:
    examples = []
    for path in sorted((ROOT / "prefect_beluga").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node, clean=False)
            if doc and "```python" in doc:
                start = _docstring_line(node)
                group = f"{relative}:{start + 1}"
                for line, code in _blocks(doc, start):
                    examples.append(Example(group, f"{relative}:{line}", code))
    for path in sorted((ROOT / "docs").glob("*.md")):
        relative = path.relative_to(ROOT).as_posix()
        for line, code in _blocks(path.read_text(), 0):
            examples.append(Example(relative, f"{relative}:{line}", code))
    return _keyed(examples)


def _keyed(examples: list[Example]) -> list[Example]:
    """Each example with its key: its path and first code line, which move less than its line
    number (the Nth block of a path starting with the same line gets " #N")."""
    seen: dict[tuple[str, str], int] = defaultdict(int)
    keyed = []
    for example in examples:
        path = example.where.rsplit(":", 1)[0]
        first = next((line.strip() for line in example.code.splitlines() if line.strip()), "")
        seen[path, first] += 1
        count = seen[path, first]
        key = (path, first if count == 1 else f"{first} #{count}")
        keyed.append(Example(example.group, example.where, example.code, key))
    return keyed


def _not_yet_runnable() -> dict[tuple[str, str], str]:
    """Why each listed block is skipped, by its key (skip is the one status)."""
    listed = {}
    for line in (Path(__file__).with_name("examples_not_yet_runnable.tsv")).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            status, path, first, why = line.split("\t")
            if status != "skip":
                raise ValueError(f"examples_not_yet_runnable.tsv: status {status!r} (only 'skip'): {line!r}")
            listed[path, first] = why
    return listed


EXAMPLES = collect()
NOT_YET_RUNNABLE = _not_yet_runnable()


def _params() -> list[Any]:
    params = []
    for example in EXAMPLES:
        marks = []
        why = example.not_run or NOT_YET_RUNNABLE.get(example.key)
        if why:
            marks.append(pytest.mark.skip(reason=f"example: not run ({why})"))
        params.append(pytest.param(example, id=example.where, marks=marks))
    return params


_namespaces: dict[str, dict[str, Any]] = defaultdict(lambda: {"__name__": "__example__"})
_directories: dict[str, Path] = {}


@pytest.mark.parametrize("example", _params())
def test_example_runs(example: Example, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    directory = _directories.setdefault(example.group, tmp_path_factory.mktemp("example"))
    monkeypatch.chdir(directory)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code = compile(example.code, example.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, _namespaces[example.group])  # noqa: S307 - the package's own examples
    if asyncio.iscoroutine(result):
        asyncio.run(result)


def test_the_examples_are_collected():
    """The collector finds the blocks of docstrings and of docs pages (not none: a broken fence
    pattern would silently run nothing)."""
    where = {example.where.split(":")[0] for example in EXAMPLES}
    assert "prefect_beluga/orchestration/chain.py" in where and "docs/guide.md" in where
    assert len(EXAMPLES) > 100


def test_every_listed_example_still_exists():
    """A line of the .tsv whose block was edited or removed names nothing: delete or update it."""
    keys = {example.key for example in EXAMPLES}
    assert sorted(set(NOT_YET_RUNNABLE) - keys) == []
