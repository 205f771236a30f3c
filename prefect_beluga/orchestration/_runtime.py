"""Where a chain or graph runs: its own flow run, a subflow of the caller's, or the caller's run.

Outside any flow run, `invoke` starts one flow run named after the chain or graph, on Prefect's
async engine. Inside a flow run it nests: as a subflow by default (the UI groups its steps), or,
with `subflow=False`, as task runs of the caller's flow run.

`run_body` hands Prefect long-lived API clients for the run (`_api_clients.py`).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from prefect import Flow, tags
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner

from prefect_beluga.core.config import RunConfig
from prefect_beluga.orchestration import _prefect_internals as internals
from prefect_beluga.orchestration._api_clients import api_clients

Body = Callable[[dict[str, Any], RunConfig], Awaitable[Any]]

# The RunConfig of the flow run about to start; flow parameters carry only the input.
_starting_config: ContextVar[RunConfig] = ContextVar("prefect_beluga_starting_config")


def flow_name(name: str) -> str:
    """`name` made valid as a Prefect flow name (no / % & < >)."""
    return re.sub(r"[/%&<>]", "-", name) or "runnable"


def body_flow(
    name: str, body: Body, *, description: str | None = None, task_runner: TaskRunner | None = None
) -> Flow:
    """A Prefect async flow named `name` that runs `body(input, config)`.

    Built once per chain or graph: creating a Flow is not free, starting one run of it is cheap.
    `task_runner` (default: Prefect's) is the flow's, for tasks the body submits.

    The flow's function holds only a key to `body`: Prefect pickles the flow into the context
    of every task it submits to a task runner (Dask), and the chain or graph behind `body`
    need not, and often cannot, be pickled.
    """
    key = f"{flow_name(name)}-{next(_body_keys)}"
    _bodies[key] = (
        weakref.WeakMethod(body, lambda _: _bodies.pop(key, None))
        if inspect.ismethod(body)
        else (lambda: body)
    )

    async def run(input: dict[str, Any]) -> Any:
        return await _run_body_by_key(key, input)

    return Flow(
        run,
        name=flow_name(name),
        description=description,
        validate_parameters=False,
        persist_result=False,
        task_runner=task_runner,
    )


_bodies: dict[str, Callable[[], Body | None]] = {}
_body_keys = itertools.count(1)


async def _run_body_by_key(key: str, input: dict[str, Any]) -> Any:
    body = _bodies[key]()
    if body is None:
        raise RuntimeError(f"the chain or graph of flow {key!r} no longer exists")
    return await body(input, _starting_config.get(RunConfig()))


def in_flow_run() -> bool:
    """True when called from inside a Prefect flow run (or a task run within one)."""
    return FlowRunContext.get() is not None


async def run_body(
    flow: Flow, body: Body, state: dict[str, Any], config: RunConfig, *, subflow: bool = True
) -> Any:
    """Run `body` on `state`: in a new flow run, a subflow, or inline in the caller's flow run."""
    with tags(*config.tags):
        if not subflow and in_flow_run():
            return await body(state, config)
        if config.run_name:
            flow = flow.with_options(flow_run_name=config.run_name)
        token = _starting_config.set(config)
        try:
            async with api_clients():
                return await flow(state)
        finally:
            _starting_config.reset(token)
            _send_events_at_exit()


# -- at exit: let Prefect's workers send what they hold ---------------------------------------------

#: Seconds the interpreter's exit waits for Prefect's events and API log workers to send what they hold.
EXIT_SEND_SECONDS = 10.0
_exit_hook = threading.Event()


def _send_events_at_exit() -> None:
    """Once, after the first top-level run: at interpreter exit, wait (at most EXIT_SEND_SECONDS)
    until Prefect's events and API log workers have sent what they hold, before Prefect stops them.

    Prefect drains them at exit too, but stopping a worker whose queue is not empty logs
    `WARNING | EventsWorker - Still processing items: N items remaining...`, which a script that
    ends right after a run (the README's blocks) always hit. The hook is registered with
    threading's exit hooks after the first run has started those workers, so it runs before
    their own (hooks run newest first)."""
    if _exit_hook.is_set():
        return
    _exit_hook.set()
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # already exiting
            register(_wait_for_prefect_workers)


def _wait_for_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    deadline = time.monotonic() + EXIT_SEND_SECONDS
    while time.monotonic() < deadline:
        pending = internals.pending_service_items(EventsWorker, APILogWorker)
        if not pending:
            return
        time.sleep(0.02)
