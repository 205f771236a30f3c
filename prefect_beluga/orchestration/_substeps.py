"""Sub-steps as Prefect task runs: the Prefect side of `prefect_beluga.core._substeps`.

An agent's model calls and tool calls ask the hook in `core/_substeps.py` to run them as
observable steps. Here, inside a flow run, each one becomes a Prefect async task run named
after the sub-step (the tool's name, the chat model's name), with its `retries`, `retry_delay`
and `timeout` as the task's retry policy and timeout, nested under whatever task run is
current (a chain step, a graph node) or directly in the flow run (a workflow body). Outside a
flow run, sub-steps run inline, and `root` starts one flow run for the whole agent.

Inside any flow run (a workflow's or a user's own) each one is durable (`_durable.py`): its
result is persisted under its place in the run (the outermost flow run, the path of the agent
and the sub-step's occurrence in it), so a flow run retried or re-run after its process died
reads back the model turns and tool calls that had finished instead of paying for them again.
`Agent(..., durable=False)` opts its sub-steps out.

A sub-step with a `cache_key` (an agent's model turn) started while a step cached across runs
is running (`active_cache`) runs as a variant of its task cached by value (`SubstepValueKey`:
its `cache_key()` and the canonical JSON of its arguments), stored where that step's cache is:
a re-run does not pay again for the model turns already answered (its record is committed when
the turn ends, not with the enclosing step's transaction), and a hit is a task run in Prefect's
Cached state. Tool calls have no `cache_key`: they always run.

A task is built once per (sub-step, function) pair and reused: building a Prefect task is not
free, starting one run of it is cheap. Arguments are passed quoted (Prefect does not walk them).
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prefect import Task
from prefect.cache_policies import NONE
from prefect.transactions import CommitMode, atransaction
from prefect.utilities.annotations import quote

from prefect_beluga.core._substeps import InlineSubsteps, Substep
from prefect_beluga.core.config import RunConfig
from prefect_beluga.core.streaming import current_node
from prefect_beluga.orchestration import _durable
from prefect_beluga.orchestration._cache import CacheSettings, active_cache, cached_substep_options
from prefect_beluga.orchestration._runtime import (
    body_flow,
    flow_name,
    in_flow_run,
    run_body,
)
from prefect_beluga.orchestration._stream import stopped_body
from prefect_beluga.orchestration._tasks import RetryPolicy, StepTask, announce_retry
from prefect_beluga.orchestration._usage import budgeted
from prefect_beluga.orchestration.signals import await_for_signal

T = TypeVar("T")

_MAX_TASKS = 1024  # (sub-step, function) pairs kept; the oldest is rebuilt when needed again


class PrefectSubsteps(InlineSubsteps):
    """Sub-steps as Prefect task runs inside a flow run; inline outside one."""

    def __init__(self) -> None:
        self._tasks: OrderedDict[tuple[Any, ...], Task] = OrderedDict()
        # cached variants, keyed by (sub-step, function, id of the settings); the settings are
        # held with the task, so their id is not reused while the entry lives
        self._cached: OrderedDict[tuple[Any, ...], tuple[Task, CacheSettings]] = OrderedDict()
        self._flows: weakref.WeakKeyDictionary[object, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def task_for(self, step: Substep, fn: Callable[..., Awaitable[Any]]) -> Task:
        """The Prefect task running `fn` as `step` (built once, then reused)."""
        key = (step, fn)
        with self._lock:
            task = self._tasks.get(key)
            if task is not None:
                self._tasks.move_to_end(key)
                return task

        async def run(args: tuple[Any, ...]) -> Any:
            announce_retry(current_node.get() or step.name, substep=step.name)
            return await fn(*args)

        run.__qualname__ = run.__name__ = step.name
        policy = RetryPolicy(retries=step.retries, retry_delay=step.retry_delay, timeout=step.timeout)
        task = StepTask(
            run,
            name=step.name,
            task_run_name=step.name,
            **policy.task_options(),
            cache_policy=NONE,
            persist_result=False,
        )
        task._scoped = False  # scoped by `run`, as a sub-step of the current scope
        with self._lock:
            self._tasks[key] = task
            while len(self._tasks) > _MAX_TASKS:
                self._tasks.popitem(last=False)
        return task

    def cached_task_for(self, step: Substep, fn: Callable[..., Awaitable[Any]], settings: CacheSettings) -> Task:
        """`task_for(step, fn)` cached by value with `settings` (built once per settings)."""
        key = (step, fn, id(settings))
        with self._lock:
            entry = self._cached.get(key)
            if entry is not None:
                self._cached.move_to_end(key)
                return entry[0]
        # A plain Task: its cross-run key serves inside a workflow run too (no run-scoped key).
        task = Task.with_options(self.task_for(step, fn), **cached_substep_options(step, settings))
        with self._lock:
            self._cached[key] = (task, settings)
            while len(self._cached) > _MAX_TASKS:
                self._cached.popitem(last=False)
        return task

    async def run(self, step: Substep, fn: Callable[..., Awaitable[T]], /, *args: Any) -> T:
        if not in_flow_run():
            return await super().run(step, fn, *args)
        settings = active_cache.get() if step.cache_key is not None else None
        if settings is None:
            task = self.task_for(step, fn)
            # one argument: keys hash it whole
            return await _durable.run_durably(step.name, task, task.durable(), (quote(args),), {})
        # Commit eagerly: inside the step's Prefect transaction the record would otherwise be
        # written only when the step completes, and lost when it fails later.
        async with atransaction(commit_mode=CommitMode.EAGER):
            return await self.cached_task_for(step, fn, settings)(quote(args))

    async def root(
        self, owner: object, name: str, fn: Callable[[Any], Awaitable[T]], input: Any, config: RunConfig | None = None
    ) -> T:
        enabled = getattr(owner, "durable", True)
        if in_flow_run():
            async with _durable.entered(name, enabled):
                return await fn(input)
        flow = self._flows.get(owner)
        if flow is None or flow.name != flow_name(name):
            body = _Body(fn, getattr(owner, "usage_limits", None), f"{type(owner).__name__.lower()} {name!r}")
            flow = body_flow(name, body.__call__, description=f"{type(owner).__name__} {name!r}")
            flow._beluga_body = body  # the flow holds its body (body_flow keeps a weak reference)
            self._flows[owner] = flow
        async with _durable.entered(name, top_level=True):
            return await run_body(flow, flow._beluga_body.__call__, input, config or RunConfig())

    def in_workflow(self) -> bool:
        return _durable.in_workflow()

    async def wait_for_signal(self, name: str) -> Any:
        if not self.in_workflow():
            return await super().wait_for_signal(name)
        return await await_for_signal(name)


class _Body:
    """A flow body calling `fn(input)`, held by its flow; a method's owner is held weakly."""

    def __init__(self, fn: Callable[[Any], Awaitable[Any]], usage_limits: Any = None, name: str = "") -> None:
        self.fn: Callable[[], Callable[[Any], Awaitable[Any]] | None] = (
            weakref.WeakMethod(fn) if inspect.ismethod(fn) else (lambda: fn)
        )
        # An agent's limits, again around its own flow run: the same budget (the agent's own,
        # inside, refuses first), opened here so its usage goes on this flow run's artifact.
        self.usage_limits = usage_limits
        self.name = name

    async def __call__(self, input: Any, config: RunConfig) -> Any:
        # A streaming caller that left (agent.astream(..., tokens=True)): the run ends Cancelled.
        return await stopped_body(self._call, input, config)

    async def _call(self, input: Any, config: RunConfig) -> Any:
        fn = self.fn()
        if fn is None:
            raise RuntimeError("the object this flow ran no longer exists")
        if self.usage_limits is None:
            return await fn(input)
        async with budgeted(self.usage_limits, self.name):
            return await fn(input)


PREFECT_SUBSTEPS = PrefectSubsteps()
