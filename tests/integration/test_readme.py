"""Every Python block of README.md runs as written: offline, no key, each in its own process.

Each block runs as a script in a fresh process with its own temporary PREFECT_HOME and result
storage, without any OPENAI_/PINECONE_/BELUGA_ variable, on this module's own `prefect server`
(the `prefect_server` fixture: the same API the embedded default serves, started once instead of
once per block). A block with top-level `await` runs inside `asyncio.run`. A block runs quietly:
no traceback and no WARNING or ERROR log line on a successful run (the embedded API's own start
and exit are checked by test_embedded_api.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
# A log line at WARNING or above, as Prefect's console handler prints it ("12:00:00.000 | ERROR | ...").
LOUD = re.compile(r"^\S+ \| (WARNING|ERROR|CRITICAL) +\|", re.MULTILINE)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


def as_script(code: str) -> str:
    """`code`, wrapped in a coroutine run by asyncio when it awaits at top level."""
    try:
        compile(code, "README.md", "exec")
    except SyntaxError as exc:
        if "outside" not in str(exc) or "await" not in str(exc):
            raise
        return f"import asyncio\n\n\nasync def main():\n{textwrap.indent(code, '    ')}\n\nasyncio.run(main())\n"
    return code


def offline_env(server_env: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: v for k, v in server_env.items() if not k.startswith(("OPENAI_", "PINECONE_", "BELUGA_"))}
    env.update(PREFECT_HOME=str(home / "home"), PREFECT_LOCAL_STORAGE_PATH=str(home / "storage"))
    return env


def test_the_readme_has_python_examples():
    assert len(python_blocks()) >= 5


@pytest.mark.parametrize("line, code", python_blocks(), ids=[f"README.md:{line}" for line, _ in python_blocks()])
def test_readme_block_runs_as_written(line, code, tmp_path, prefect_server):
    script = tmp_path / f"readme_line_{line}.py"
    script.write_text(as_script(code), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=offline_env(prefect_server.env, tmp_path),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, f"README.md:{line} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr, f"README.md:{line} printed a traceback:\n{done.stderr[-4000:]}"
    loud = [line for line in done.stderr.splitlines() if LOUD.match(line)]
    assert not loud, f"README.md:{line} logged warnings or errors:\n" + "\n".join(loud)
