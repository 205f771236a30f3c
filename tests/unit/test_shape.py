"""The package's shape (issue 26, "Done when"): no import cycles, no module past 450 lines.

Cycles are read from the whole import graph (grimp, what import-linter builds on): imports
inside functions and under `TYPE_CHECKING` count too, so a cycle cannot be hidden by moving an
import into a function.
"""

from __future__ import annotations

from pathlib import Path

import grimp

import prefect_beluga

PACKAGE = Path(prefect_beluga.__file__).parent
MAX_LINES = 450


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if not imported.startswith("prefect_beluga"):
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module.startswith("prefect_beluga") and module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("prefect_beluga.a", "prefect_beluga.b", "prefect_beluga.c"):
        graph.add_module(name)
    graph.add_import(importer="prefect_beluga.a", imported="prefect_beluga.b")
    graph.add_import(importer="prefect_beluga.b", imported="prefect_beluga.a")
    graph.add_import(importer="prefect_beluga.c", imported="prefect_beluga.a")
    assert _cycles(graph) == [["prefect_beluga.a", "prefect_beluga.b"]]


def test_the_package_has_no_import_cycles():
    graph = grimp.build_graph("prefect_beluga")
    cycles = _cycles(graph)
    def lines(a: str, b: str) -> str:
        return ", ".join(str(d["line_number"]) for d in graph.get_import_details(importer=a, imported=b))

    details = [
        f"{a} -> {b} (line {lines(a, b)})"
        for cycle in cycles
        for a in cycle
        for b in cycle
        if a != b and graph.direct_import_exists(importer=a, imported=b)
    ]
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_no_module_is_longer_than_450_lines():
    long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"
