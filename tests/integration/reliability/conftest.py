"""Reliability suite: every case adds a row to one table, printed at the end of the run.

The fixtures of ``tests/conftest.py`` and ``tests/integration/conftest.py`` (the session's
Prefect API, the loopback ``openai_server`` / ``pinecone_server``, the module-scoped
``prefect_server``) apply here too.
The table is also written to ``$BELUGA_RELIABILITY_TABLE`` when that is set (for the README).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

COLUMNS = ("case", "component", "path", "fault", "attempts", "outcome", "vectors expected/stored", "seconds")
ROWS: list[dict[str, Any]] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`report(component=..., path=..., fault=..., attempts=..., outcome=..., vectors=...)`:
    one row of the summary table for this test (call it once the case's assertions passed)."""

    started = time.monotonic()

    def add(**row: Any) -> None:
        row.setdefault("case", request.node.name.removeprefix("test_"))
        row.setdefault("seconds", f"{time.monotonic() - started:.1f}")
        ROWS.append(row)

    return add


def vectors_cell(expected: int | None, stored: int | None) -> str:
    return "-" if expected is None else f"{expected}/{stored}"


def render(rows: list[dict[str, Any]]) -> list[str]:
    cells = [[str(row.get(c if c != "vectors expected/stored" else "vectors", "-")) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return [line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in cells)]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not ROWS:
        return
    terminalreporter.section("reliability: fault injection and crash/resume", sep="=")
    lines = render(ROWS)
    for text in lines:
        terminalreporter.write_line(text)
    target = os.environ.get("BELUGA_RELIABILITY_TABLE")
    if target:
        with open(target, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
