"""The layers of docs/architecture.md hold: the AI parts do not load Prefect, the root imports lazily.

Each check runs in a fresh interpreter, so what this test session already imported does not count.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import prefect_beluga
from prefect_beluga.core._sync import run_sync

AI_PARTS = [
    "prefect_beluga",
    "prefect_beluga.core",
    "prefect_beluga.schema",
    "prefect_beluga.llms",
    "prefect_beluga.embeddings",
    "prefect_beluga.vectorstores",
    "prefect_beluga.memory",
    "prefect_beluga.tokens",
    "prefect_beluga.tools",
    "prefect_beluga.rag",
    "prefect_beluga.agents",
    "prefect_beluga.usage",
    "prefect_beluga.mcp._client",
]


def _loaded_after(statement: str) -> list[str]:
    """The top-level Prefect / orchestration / blocks modules loaded by `statement`, fresh."""
    code = (
        f"import json, sys\n{statement}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'prefect' or m.startswith(("
        "'prefect.', 'prefect_beluga.orchestration', 'prefect_beluga.blocks')))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", AI_PARTS)
def test_an_ai_part_does_not_load_prefect(module):
    assert _loaded_after(f"import {module}") == []


def test_mcp_loads_the_prefect_layer_when_serve_is_first_asked_for():
    assert _loaded_after("import prefect_beluga.mcp") == []
    assert "prefect_beluga.orchestration._mcp_serve" in _loaded_after("from prefect_beluga.mcp import serve")


PREFECT_LAYER = {"orchestration", "blocks", "testing", "server"}


def test_the_prefect_contract_covers_every_other_module():
    """Contract 3 of pyproject.toml lists every top-level module outside the Prefect layer: a new
    module must be added to it (or the contract would not check it)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["forbidden_modules"] == ["prefect"])
    others = {f"prefect_beluga.{m.name}" for m in pkgutil.iter_modules(prefect_beluga.__path__)} - {
        f"prefect_beluga.{name}" for name in PREFECT_LAYER
    }
    assert sorted(contract["source_modules"]) == sorted(others)


def test_the_check_sees_prefect_when_it_is_loaded():
    loaded = _loaded_after("import prefect_beluga.orchestration")
    assert "prefect" in loaded and "prefect_beluga.orchestration" in loaded


def test_the_root_loads_orchestration_on_first_use_of_a_name():
    loaded = _loaded_after("import prefect_beluga\nprefect_beluga.Chain")
    assert "prefect_beluga.orchestration.chain" in loaded


def test_the_root_names_an_unknown_attribute():
    import prefect_beluga

    with pytest.raises(AttributeError, match="no_such_name"):
        prefect_beluga.no_such_name  # noqa: B018


_probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


def test_the_sync_bridge_from_plain_code_keeps_one_loop_and_the_callers_context():
    async def loop_id():
        return id(asyncio.get_running_loop()), _probe.get()

    token = _probe.set("caller")
    try:
        first, seen = run_sync(loop_id())
        second, _ = run_sync(loop_id())
    finally:
        _probe.reset(token)
    assert first == second  # one long-lived loop: cached async clients stay usable
    assert seen == "caller"


def test_the_sync_bridge_from_inside_a_running_loop_and_from_its_own_loop():
    async def inner():
        return "inner"

    async def outer():
        nested = run_sync(inner())  # from a coroutine on the bridge's own loop: no deadlock
        return nested

    async def main():
        return run_sync(outer())  # from inside a running loop (as in a notebook)

    assert asyncio.run(main()) == "inner"


def test_the_sync_bridge_raises_the_coroutines_error():
    async def fail():
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run_sync(fail())


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_importing_orchestration_and_limits_installs_no_hook():
    out = _run(
        "import prefect_beluga.orchestration, prefect_beluga.limits\n"
        "from prefect_beluga.core import _limits as limits, _substeps as substeps\n"
        "print(substeps._default is None, limits._limiter is None)"
    )
    assert out == "True True"


def test_hooks_are_found_on_first_use():
    out = _run(
        "from prefect_beluga.core import _limits as limits, _substeps as substeps\n"
        "print(type(substeps.substeps()).__name__, type(limits.get_limiter()).__name__)"
    )
    assert out == "PrefectSubsteps PrefectLimiter"


def test_a_hook_set_explicitly_wins():
    out = _run(
        "from prefect_beluga.core import _substeps as substeps\n"
        "substeps.install_default(substeps.InlineSubsteps())\n"
        "print(type(substeps.substeps()).__name__)"
    )
    assert out == "InlineSubsteps"
