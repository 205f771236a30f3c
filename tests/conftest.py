"""Test session setup: one isolated Prefect API (temporary PREFECT_HOME) for the whole session."""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: a private home, so the SQLite database is ours alone.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-tests-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterParentTaskRunId
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[None]:
    """A temporary Prefect server (SQLite in a temp dir) shared by the session."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def run_name() -> str:
    """A unique flow run name, to find a run again through the API."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def read_flow_run(name: str, timeout: float = 30.0) -> FlowRun:
    """The flow run called `name`, waiting for it to reach a final state."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
            if runs and runs[0].state and runs[0].state.is_final():
                return runs[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no finished flow run named {name!r} after {timeout}s: {runs}")
            await asyncio.sleep(0.2)


async def read_task_runs(flow_run_id: uuid.UUID, expected: int, timeout: float = 30.0) -> list[TaskRun]:
    """The task runs of a flow run, oldest first, once `expected` of them are final.

    Task runs reach the API as events, a little after the flow run returns: wait for them.
    """
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}),
            )
            final = [r for r in runs if r.state and r.state.is_final()]
            if len(final) >= expected:
                return sorted(final, key=lambda r: r.start_time or r.expected_start_time)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {expected} finished task runs in flow run {flow_run_id}, "
                    f"found {[(r.name, r.state_type) for r in runs]}"
                )
            await asyncio.sleep(0.2)


async def read_subflow_runs(parent_flow_run_id: uuid.UUID) -> list[FlowRun]:
    """Flow runs nested under a flow run (through the task run that represents them)."""
    async with get_client() as client:
        parent_tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [parent_flow_run_id]})
        )
        if not parent_tasks:
            return []
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in parent_tasks])
            )
        )


# The loopback OpenAI-compatible server (prefect_beluga.testing), as the `openai_server` fixture.
from prefect_beluga.testing.openai_server import openai_server  # noqa: E402,F401

# The loopback Pinecone data-plane server (prefect_beluga.testing), as the `pinecone_server` fixture.
from prefect_beluga.testing.pinecone_server import pinecone_server  # noqa: E402,F401

# A real `prefect server start` on loopback (prefect_beluga.testing), as the module-scoped
# `prefect_server` fixture, for tests that need several processes on one API.
from prefect_beluga.testing.prefect_server import prefect_server  # noqa: E402,F401

# The deployable flows in flows/ are scripts, not a package: make them importable by tests
# (`from rag_ingest import rag_ingest`), as Prefect does when it loads their entrypoints.
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

FLOWS_DIR = Path(__file__).resolve().parents[1] / "flows"
sys.path.insert(0, str(FLOWS_DIR))


def stop_process_group(process, timeout: float = 15.0) -> None:
    """SIGTERM a subprocess started with `start_new_session=True` and its children; SIGKILL on timeout."""
    import signal
    import subprocess

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def write_docs(directory: Path, docs: dict[str, str]) -> Path:
    """A `docs` folder under `directory` holding `docs` (file name -> text), for ingest tests."""
    folder = directory / "docs"
    folder.mkdir(parents=True)
    for name, text in docs.items():
        (folder / name).write_text(text)
    return folder
