"""Turning Runnables into Prefect tasks: the one place this happens.

A step (of a chain) or a node (of a graph) runs as a Prefect async task named after it. Its
retry policy is the task's: `retries`, `retry_delay_seconds` (a list for backoff),
`retry_jitter_factor`, a `retry_condition_fn` that spares permanent errors, and
`timeout_seconds` per attempt. Results are not cached or persisted by default: a step of an
LLM pipeline is rarely worth hashing its inputs on every call (see docs/performance.md).

Inside any flow run (a workflow's, or a user's own `@flow`) a step is durable instead: its
result is persisted under the key of its place in the run (`_durable.py`: the outermost flow
run's id, the step's path and occurrence), so when that run is retried or re-run after its
process died, the steps that had finished are read back, not run again. Outside a flow run the
task is exactly the cheap one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prefect import Task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.states import State
from prefect.utilities.annotations import quote

from prefect_beluga.core._checks import check_int, check_number, is_number
from prefect_beluga.core.config import RunConfig
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.retry import RetryOn, retry_after_of, should_retry
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.core.state import check_output
from prefect_beluga.core.streaming import current_item, current_node, token_sink
from prefect_beluga.orchestration import _durable
from prefect_beluga.orchestration._cache import CacheSettings, active_cache, cached_task_options
from prefect_beluga.orchestration._durable import durable_options
from prefect_beluga.orchestration._stream import cancelled_step, step_call

# Longest server-requested wait honoured per retry; beyond it the policy's own delay applies.
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a step is retried, as a Prefect task retry policy.

    Args:
        retries: Extra attempts after the first (as in Prefect; Beluga counts total attempts).
        retry_delay: Seconds before each retry; a list gives the delay per retry (backoff),
            its last value repeating.
        retry_jitter: Prefect's `retry_jitter_factor`: a delay may grow by up to this factor.
        retry_on: Exception type(s) or a predicate deciding what is retried; default:
            everything but permanent errors (see `prefect_beluga.core.retry.is_permanent`).
        timeout: Seconds one attempt may take (Prefect's task `timeout_seconds`).
    """

    retries: int = 0
    retry_delay: float | Sequence[float] = 0.0
    retry_jitter: float | None = None
    retry_on: RetryOn | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        check_int(self.retries, "retries")
        delays = self.retry_delay if isinstance(self.retry_delay, Sequence) else [self.retry_delay]
        if not delays or any(not is_number(d) or d < 0 for d in delays):
            raise ValidationError(
                f"retry_delay must be seconds >= 0 or a non-empty list of them, got {self.retry_delay!r}"
            )
        if isinstance(self.retry_delay, Sequence):
            object.__setattr__(self, "retry_delay", tuple(self.retry_delay))
        if self.retry_jitter is not None:
            check_number(self.retry_jitter, "retry_jitter", strict=False)
        if self.timeout is not None:
            check_number(self.timeout, "timeout", seconds=True)
        if self.retry_on is not None and not (
            callable(self.retry_on) or isinstance(self.retry_on, tuple)
        ):
            raise ValidationError(
                f"retry_on must be an exception type, a tuple of them or a predicate, got {self.retry_on!r}"
            )

    def delay_before(self, retry: int) -> float:
        """The configured delay before retry number `retry` (1 for the first retry)."""
        if isinstance(self.retry_delay, tuple):
            return float(self.retry_delay[min(retry, len(self.retry_delay)) - 1])
        return float(self.retry_delay)

    def task_options(self) -> dict[str, Any]:
        """This policy as keyword arguments of a Prefect task.

        Examples:
            ```python
            from prefect import task
            from prefect_beluga.orchestration import RetryPolicy

            @task(**RetryPolicy(retries=3, retry_delay=[2, 10, 30]).task_options())
            async def upsert(batch): ...
            ```
        """
        delay = self.retry_delay
        return {
            "retries": self.retries,
            "retry_delay_seconds": list(delay) if isinstance(delay, tuple) else delay,
            "retry_jitter_factor": self.retry_jitter,
            "retry_condition_fn": self._retry_condition,
            "timeout_seconds": self.timeout,
        }

    async def _retry_condition(self, task: Task, task_run: TaskRun, state: State) -> bool:
        """Prefect's `retry_condition_fn`: spare permanent errors, honour `Retry-After`.

        When the server asked for a longer wait than the task's delay (a 429 or 503 with
        `Retry-After`), the difference is waited here, before Prefect schedules the retry. The
        task's own delay is used, not this policy's: `task.with_options` may have changed it.
        """
        exc = state.data
        if not isinstance(exc, BaseException) or not should_retry(exc, self.retry_on):
            return False
        asked = retry_after_of(exc)
        if asked is not None:
            delays = RetryPolicy(retry_delay=task.retry_delay_seconds or 0)
            extra = min(asked, MAX_RETRY_AFTER) - delays.delay_before(max(task_run.run_count, 1))
            if extra > 0:
                await asyncio.sleep(extra)
        return True


class StepTask(Task):
    """A step's Prefect task, durable inside a flow run (see `_durable.py`).

    Called inside a flow run, the call is the next occurrence of the step (its task run name)
    in the current durable scope: its persisted variant (`durable()`) runs, whose record is
    read back when the flow run runs again. Its function ends Cancelled, not Crashed, when the
    caller streaming the run leaves the stream (`_stream.cancelled_step`)."""

    _durable_variant: Task | None = None
    _scoped = True  # False for sub-step tasks: their runner scopes them (see `_substeps.py`)

    def __init__(
        self, fn: Callable[..., Awaitable[Any]], *, durable_as_is: bool = False, **options: Any
    ) -> None:
        """`options` are Prefect's task options. `durable_as_is`: the task's own key and
        persisted result make it durable already (a step cached across runs): inside a flow
        run it runs as it is."""
        super().__init__(_stoppable(fn), **options)
        self._made_of = (fn, options, durable_as_is)  # what `with_options` builds a copy from
        if durable_as_is:
            self._durable_variant = Task.with_options(self)

    def durable(self) -> Task:
        """This task with the durable scope's key and a persisted result (built once)."""
        variant = self._durable_variant
        if variant is None:
            # Prefect's with_options returns a plain Task: its calls go straight to Prefect.
            variant = Task.with_options(self, **durable_options())
            self._durable_variant = variant
        return variant

    def with_options(self, **changes: Any) -> StepTask:
        """This task built again with some options changed (e.g. a graph loop's `node[2]`):
        a StepTask too, durable inside a flow run as this one is."""
        fn, options, durable_as_is = self._made_of
        task = StepTask(fn, **{**options, **changes}, durable_as_is=durable_as_is)
        task._scoped = self._scoped
        return task

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._scoped or (_durable.current.get() is None and FlowRunContext.get() is None):
            return step_call(super().__call__(*args, **kwargs))
        name = self.task_run_name if isinstance(self.task_run_name, str) else self.name
        if "{" in name:  # a Map item: "<step>[{index}]"
            index = kwargs.get("index", args[3] if len(args) > 3 else 0)
            name = name.format(index=index)
        plain = super().__call__
        return step_call(_durable.run_durably(name, plain, self.durable(), args, kwargs))


def _stoppable(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`fn` run through `cancelled_step`; Prefect sees `fn`'s signature, name and task key."""

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        ran = _durable.ran_probe.get()
        if ran is not None:  # a durable call under usage limits: this record is not a replay
            ran.append(True)
        return await cancelled_step(fn, *args, **kwargs)

    run.__prefect_task_source__ = fn  # type: ignore[attr-defined]  # Prefect keys the task on `fn`
    return run


async def _invoke_step(
    runnable: Runnable, name: str, state: Any, config: RunConfig, cache: CacheSettings | None = None
) -> Any:
    """Run a step's runnable; when the caller streams tokens, tag its chunks with `name` and
    announce a retry before its fresh stream (docs/streaming.md). While a cached step runs,
    `active_cache` holds its settings (its sub-steps with a `cache_key` are cached too); an
    uncached step inside it clears them.

    Module-level, not inside the task's function: a task runner that pickles the function
    (Dask) pickles it by reference, never the context variables it touches.
    """
    if cache is not None or active_cache.get() is not None:
        token = active_cache.set(cache)
        try:
            return await _streamed_step(runnable, name, state, config)
        finally:
            active_cache.reset(token)
    return await _streamed_step(runnable, name, state, config)


async def invoke_item(
    runnable: Runnable, name: str, index: int, state: Any, config: RunConfig, cache: CacheSettings | None = None
) -> Any:
    """Run item `index` of the Map step `name` as `_invoke_step` runs a step; its streamed
    events (tokens, retry, tool calls) carry the index too."""
    with current_item.set_for(index):
        return await _invoke_step(runnable, name, state, config, cache)


async def _streamed_step(runnable: Runnable, name: str, state: Any, config: RunConfig) -> Any:
    if token_sink() is None:
        return await runnable.ainvoke(state, config)
    announce_retry(name)
    with current_node.set_for(name):
        return await runnable.ainvoke(state, config)


def announce_retry(node: str, substep: str | None = None) -> None:
    """When the task run now starting is a retry and the caller streams tokens, say so first."""
    sink = token_sink()
    task_run = TaskRunContext.get()
    if sink is not None and task_run is not None and task_run.task_run.run_count > 1:
        sink.retry(node, task_run.task_run.run_count, substep, current_item.get())


class StepCall(Protocol):
    """What a chain or graph calls for a step: a `StepTask`, or what a `MakesOwnTask` makes."""

    def __call__(self, state: Any, config: Any, upstream: Any = None) -> Awaitable[Any]: ...

    def with_options(self, *, task_run_name: str) -> StepCall: ...

    def submit(self, state: dict[str, Any], config: RunConfig, upstream: Any = None) -> Any: ...


@runtime_checkable
class MakesOwnTask(Protocol):
    """A Runnable that becomes a step of its own kind (a `Map`: one task run per item)."""

    def step_task(
        self, *, name: str, where: str, policy: RetryPolicy, tags: Sequence[str], cache: CacheSettings | None
    ) -> StepCall: ...


def caching_options(runnable: Runnable, name: str, cache: CacheSettings | None) -> dict[str, Any]:
    """A step task's cache options: cached across runs by value (`_cache.py`), or not at all."""
    if cache is not None:
        return cached_task_options(runnable, name, cache)
    return {"cache_policy": NONE, "persist_result": False}


def runnable_task(
    runnable: Runnable,
    *,
    name: str,
    where: str,
    policy: RetryPolicy,
    tags: Sequence[str] = (),
    cache: CacheSettings | None = None,
) -> StepCall:
    """A Prefect async task that runs `runnable` on a state dict and checks its output.

    Call it as `await step(state, config, upstream)`: `state` is passed quoted (Prefect does
    not walk it), `upstream` holds the exact objects parent tasks returned, which is how
    Prefect records the edges between task runs (`task_inputs`) and draws them in the UI.
    `where` (e.g. "step 2 of chain 'rag'") names the step in validation errors. `tags` go on
    every task run, so Prefect's tag concurrency limits apply to it. With `cache`, the task
    is cached across runs by value (see `_cache.py`); inside a workflow run it keeps that key
    (same input, same result: a retried workflow run reuses it too).

    A runnable that `MakesOwnTask` (a `Map`: one task run per item, see `_map.py`) makes its
    own, with the same arguments.
    """
    if isinstance(runnable, MakesOwnTask):
        return runnable.step_task(name=name, where=where, policy=policy, tags=tags, cache=cache)

    async def run(state: Any, config: RunConfig, upstream: Any = None) -> dict[str, Any]:
        return check_output(await _invoke_step(runnable, name, state, config, cache), where=where)

    run.__qualname__ = run.__name__ = name  # shown in tracebacks
    return StepTask(
        run,
        name=name,
        task_run_name=name,
        **policy.task_options(),
        tags=list(tags),
        **caching_options(runnable, name, cache),
        durable_as_is=cache is not None,
    )


def call_args(state: dict[str, Any]) -> quote:
    """Wrap a state for a task call so Prefect passes it through without walking it."""
    return quote(state)
