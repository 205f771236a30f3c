"""Helpers for tests that run flows: wait for something to become true (`eventually`), read runs
back from the API, stop process groups and reap child processes, write inputs, look for a
secret's encoded forms.

Import them as a module (``from prefect_beluga.testing.helpers import read_flow_run``), never
from a ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterParentTaskRunId
from prefect.client.schemas.objects import FlowRun, TaskRun

from prefect_beluga.testing.prefect_server import stop_process_group

__all__ = [
    "aeventually",
    "assert_key_stored_nowhere",
    "base64_forms",
    "create_process_pool",
    "eventually",
    "read_flow_run",
    "read_subflow_runs",
    "read_task_runs",
    "reaped",
    "stop_process_group",
    "task_runs",
    "write_docs",
]

T = TypeVar("T")


def eventually(
    check: Callable[[], T],
    what: str,
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    process: subprocess.Popen[Any] | None = None,
    raises: bool = True,
) -> T:
    """What `check()` returns once it is truthy, calling it every `interval` seconds; after
    `timeout` seconds an `AssertionError` naming `what` and the last value seen.

    An `AssertionError` raised by `check` counts as "not yet" (so a check may be a few asserts);
    any other exception ends the wait at once, and so does `process` (a child the check waits
    on) exiting first (the error ends with its stderr when the test piped it). With
    `raises=False` the wait is a barrier: after `timeout` the last value seen is returned and
    the test goes on. The one waiting loop of the test suite: tests do not write their own
    deadline loops.

    Examples:
        ```python
        import time

        from prefect_beluga.testing.helpers import eventually

        start = time.monotonic()
        assert eventually(lambda: time.monotonic() - start > 0.2, "0.2 s to pass") is True
        # eventually(lambda: workflow.status(wid, rid) == "PAUSED", "the run to pause")
        ```
    """
    deadline = time.monotonic() + timeout
    while True:
        seen, failure = _attempt(check)
        if seen:
            return seen
        if process is not None and process.poll() is not None:
            raise _exited(process, what)
        if time.monotonic() >= deadline:
            if not raises:
                return seen  # type: ignore[return-value]
            raise AssertionError(f"waited {timeout:g}s for {what}; last saw {failure or repr(seen)}")
        time.sleep(interval)


async def aeventually(
    check: Callable[[], Awaitable[T] | T],
    what: str,
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    raises: bool = True,
) -> T:
    """`eventually` for async tests: `check` may be a coroutine function (awaited each time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = check()
            if inspect.isawaitable(seen):
                seen = await seen
            failure = ""
        except AssertionError as exc:
            seen, failure = None, f"AssertionError: {exc}"
        if seen:
            return seen  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            if not raises:
                return seen  # type: ignore[return-value]
            raise AssertionError(f"waited {timeout:g}s for {what}; last saw {failure or repr(seen)}")
        await asyncio.sleep(interval)


def _attempt(check: Callable[[], T]) -> tuple[T | None, str]:
    try:
        return check(), ""
    except AssertionError as exc:
        return None, f"AssertionError: {exc}"


def _exited(process: subprocess.Popen[Any], what: str) -> AssertionError:
    message = f"the child process exited ({process.returncode}) before {what}"
    if process.stderr is None or process.stderr.closed:
        return AssertionError(message)
    tail = process.stderr.read()[-3000:]
    if isinstance(tail, bytes):
        tail = tail.decode(errors="replace")
    return AssertionError(f"{message}; its stderr ends:\n{tail}")


@contextmanager
def reaped(child: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """`child`, killed (if it still runs) and reaped when the block ends, however it ends: a
    test that starts a process, e.g. to SIGKILL it mid-run, leaves none behind when it fails.

    Examples:
        ```python
        import signal
        import subprocess
        import sys

        from prefect_beluga.testing.helpers import reaped

        code = "print('ready', flush=True); import time; time.sleep(60)"
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        with reaped(child):
            assert child.stdout.readline().strip() == "ready"
            child.send_signal(signal.SIGKILL)
        assert child.poll() is not None
        ```
    """
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)


async def read_flow_run(name: str, timeout: float = 30.0) -> FlowRun:
    """The flow run called `name`, waiting for it to reach a final state."""
    async with get_client() as client:

        async def finished() -> FlowRun | None:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
            return runs[0] if runs and runs[0].state and runs[0].state.is_final() else None

        return await aeventually(finished, f"a finished flow run named {name!r}", timeout=timeout)


async def read_task_runs(flow_run_id: uuid.UUID, expected: int, timeout: float = 60.0) -> list[TaskRun]:
    """The task runs of a flow run, oldest first, once `expected` of them are final.

    Task runs reach the API as events, a little after the flow run returns: wait for them.
    """
    async with get_client() as client:

        async def final() -> tuple[list[TaskRun]]:  # a 1-tuple: truthy even when `expected` is 0
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
            done = [r for r in runs if r.state and r.state.is_final()]
            assert len(done) >= expected, f"{[(r.name, r.state_type) for r in runs]}"
            return (sorted(done, key=lambda r: r.start_time or r.expected_start_time),)

        what = f"{expected} finished task runs in flow run {flow_run_id}"
        return (await aeventually(final, what, timeout=timeout))[0]


async def read_subflow_runs(parent_flow_run_id: uuid.UUID) -> list[FlowRun]:
    """Flow runs nested under a flow run (through the task run that represents them)."""
    async with get_client() as client:
        parent_tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [parent_flow_run_id]}))
        if not parent_tasks:
            return []
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in parent_tasks])
            )
        )


async def create_process_pool(name: str) -> None:
    """Create (or overwrite) the work pool `name` of type "process" on the current API."""
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=name, type="process"), overwrite=True)


def write_docs(directory: Path, docs: dict[str, str]) -> Path:
    """A `docs` folder under `directory` holding `docs` (file name -> text), for ingest tests."""
    folder = directory / "docs"
    folder.mkdir(parents=True)
    for name, text in docs.items():
        (folder / name).write_text(text)
    return folder


def base64_forms(secret: bytes) -> list[bytes]:
    """The bytes `secret` shows as inside any base64 text, at each of the 3 alignments (the
    blocks mixed with neighbouring bytes dropped): search for these to find it encoded."""
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret)
        forms.append(encoded[4: len(encoded) - 4])
    return forms


def assert_key_stored_nowhere(key: str) -> None:
    """`key` (raw, or inside base64 text) is in no byte of the API's SQLite database
    (parameters, task inputs, states, logs, events) nor of the persisted results
    (`PREFECT_LOCAL_STORAGE_PATH`)."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, PREFECT_SERVER_DATABASE_CONNECTION_URL

    time.sleep(1.0)  # events and logs reach the API shortly after a run ends
    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or ""
    files: list[Path] = []
    if url.startswith("sqlite"):
        database = Path(url.split(":///", 1)[1])
        files += [p for p in database.parent.glob(database.name + "*") if p.is_file()]
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    files += [p for p in storage.rglob("*") if p.is_file()] if storage.exists() else []
    assert files, "found nothing to search"
    secret = key.encode()
    needles = [secret, *base64_forms(secret)]
    leaked = [str(p) for p in files if any(needle in p.read_bytes() for needle in needles)]
    assert not leaked, f"the API key is stored in {leaked}"


async def task_runs(flow_run_id: Any, expected: int, timeout: float = 30.0) -> list[TaskRun]:
    """The final task runs of a flow run (nested ones included), once `expected` are in (or
    what there is after `timeout` seconds)."""
    final: list[TaskRun] = []
    async with get_client() as client:

        async def enough() -> bool:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
            final[:] = [r for r in runs if r.state and r.state.is_final()]
            return len(final) >= expected

        await aeventually(enough, f"{expected} final task runs", timeout=timeout, interval=0.1, raises=False)
    return final
