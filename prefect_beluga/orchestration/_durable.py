"""Durability: a step that finished in a flow run is read back when that flow run runs again.

One mechanism serves a `Workflow`, a user's own `@flow` and the agent loop. Inside any Prefect
flow run, a chain or graph step, a Map item, an agent's model turn and tool call persists its
result under a key made of:

- the **root**: the id of the outermost flow run (a user's flow that nests this one, the
  workflow's run);
- the **path** of the step in that run: the names of the chains, graphs, agents and steps that
  enclose it, each with its **occurrence** (`rag#0/generate#0/gpt-4o-mini#1`): the first call
  of `rag` in the run, its first step `generate`, the second model turn of the agent in it.

No input is hashed and nothing of the user's is pickled to make the key; the key is a file
name in Prefect's result storage (`beluga-run-<root>-<sha256 of the path>`). When the flow run
is retried (`@flow(retries=...)`), re-run after its process died, or a workflow is retried,
its body replays from the start: occurrences are counted from 0 again in every attempt, so the
same calls get the same keys; finished ones are read back (Prefect's Cached state), the first
unfinished one runs. A different flow run has another root, so it never reads them (sharing
across runs is `cache=True`'s job). The replay assumes the body makes the same calls in the
same order, as any durable-execution engine does.

Where a scope lives: the context variable `current` holds the `Scope` of the code running now.
Our own top-level flow runs (a chain invoked outside any flow run) set a disabled scope: there
is nothing to resume, so nothing is persisted (`outside a flow run nothing changes`). A user's
flow run gets its root scope on first use, one per attempt (`_roots`); a user's flow nested in
another user's flow is placed under the outermost one by its parent task runs (read once from
the API per nested flow run).

Results are written by Prefect's task engine (`persist_result=True`, a cache policy returning
the key), to the task's result storage: the flow's `result_storage`, else the server's default
result storage block, else `PREFECT_LOCAL_STORAGE_PATH`. Every process reading that storage can
resume the run. Each durable task run commits its record as soon as it ends
(`CommitMode.EAGER`), also when it runs inside another durable task run (an agent's model
turns inside a chain step), so a later failure or crash does not lose it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.results import get_result_store
from prefect.transactions import CommitMode, atransaction

from prefect_beluga.core._checks import check_bool
from prefect_beluga.usage import RunUsage
from prefect_beluga.usage._budget import count_replayed, current_budget, tallied, usage_in

KEY_PREFIX = "beluga-run-"

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Scope:
    """Where code runs in a durable flow run: the root run, the path, the counts of children."""

    root: str
    path: str = ""
    enabled: bool = True
    workflow: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def child(self, name: str, enabled: bool = True) -> Scope:
        """The scope of the next call named `name` here (its occurrence counted)."""
        number = self.counts.get(name, 0)
        self.counts[name] = number + 1
        return Scope(self.root, f"{self.path}/{name}#{number}", self.enabled and enabled, self.workflow)

    @property
    def key(self) -> str:
        """The record's name in result storage (a valid file name whatever the step names)."""
        return f"{KEY_PREFIX}{self.root}-{hashlib.sha256(self.path.encode()).hexdigest()[:40]}"


# Outside any of our calls: None. A disabled scope inside our own top-level flow runs.
current: ContextVar[Scope | None] = ContextVar("prefect_beluga_durable_scope", default=None)

DISABLED = Scope(root="", enabled=False)

# The root scope of each attempt of a user's flow run, held as long as its run context lives.
# Keyed by id() (run contexts are unhashable), dropped when the context is collected.
_roots: dict[int, tuple[weakref.ref[Any], Scope]] = {}
# A nested user flow run's place under the outermost one: flow run id -> (root id, path prefix).
_placements: dict[str, tuple[str, str]] = {}
_lock = threading.Lock()


def workflow_scope(run_id: str) -> Scope:
    """The root scope of one attempt of a workflow run (counted from 0 again)."""
    return Scope(root=run_id, workflow=True)


def in_workflow() -> bool:
    scope = current.get()
    return scope is not None and scope.workflow and FlowRunContext.get() is not None


async def scope_here() -> Scope | None:
    """The scope of the code running now; None outside any flow run."""
    scope = current.get()
    if scope is not None:
        return scope
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    key = id(context)
    with _lock:
        entry = _roots.get(key)
    if entry is not None and entry[0]() is context:
        return entry[1]
    root, prefix = await _placement(context)
    scope = Scope(root=root, path=prefix)
    with _lock:
        entry = _roots.get(key)
        if entry is not None and entry[0]() is context:
            return entry[1]
        _roots[key] = (weakref.ref(context, lambda _, key=key: _forget(key)), scope)
    return scope


def _forget(key: int) -> None:
    with _lock:
        entry = _roots.get(key)
        if entry is not None and entry[0]() is None:
            del _roots[key]


async def _placement(context: FlowRunContext) -> tuple[str, str]:
    """The outermost flow run's id and this flow run's path under it (its parent task runs'
    keys: stable across the outer run's attempts, unlike a nested run's own id)."""
    flow_run = context.flow_run
    run_id = str(flow_run.id)
    if flow_run.parent_task_run_id is None:
        return run_id, ""
    known = _placements.get(run_id)
    if known is not None:
        return known
    parts: list[str] = []
    parent_task_run_id = flow_run.parent_task_run_id
    root = run_id
    client = context.client
    while parent_task_run_id is not None:
        task_run = await client.read_task_run(parent_task_run_id)
        parts.append(f"{task_run.task_key}#{task_run.dynamic_key}")
        if task_run.flow_run_id is None:
            break
        root = str(task_run.flow_run_id)
        parent_task_run_id = (await client.read_flow_run(task_run.flow_run_id)).parent_task_run_id
    placement = (root, "/" + "/".join(f"flow:{p}" for p in reversed(parts)))
    with _lock:
        if len(_placements) > 10_000:
            _placements.clear()
        _placements[run_id] = placement
    return placement


@asynccontextmanager
async def entered(name: str, enabled: bool = True, *, top_level: bool = False) -> AsyncIterator[Scope | None]:
    """The block runs as the call `name` (a chain, graph or agent) of the current scope.

    `top_level`: the caller is about to start a flow run of its own (no flow run around it):
    nothing inside is durable.
    """
    if top_level:
        token = current.set(DISABLED)
        try:
            yield None
        finally:
            current.reset(token)
        return
    scope = await scope_here()
    if scope is None:
        yield None
        return
    child = scope.child(name, enabled)
    token = current.set(child)
    try:
        yield child
    finally:
        current.reset(token)


async def run_durably(name: str, plain: Any, durable: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call the task `plain` (or its persisted variant `durable`) as the step `name` of the
    current scope; the step's own sub-steps are its children."""
    scope = await scope_here()
    if scope is None:
        return await plain(*args, **kwargs)
    child = scope.child(name)
    token = current.set(child)
    try:
        if not child.enabled:
            return await plain(*args, **kwargs)
        async with atransaction(commit_mode=CommitMode.EAGER):
            if current_budget() is None:
                return await durable(*args, **kwargs)
            return await _counted(child, durable, args, kwargs)
    finally:
        current.reset(token)


#: Set around a durable call when a budget is open; the step's function marks that it ran.
ran_probe: ContextVar[list[bool] | None] = ContextVar("prefect_beluga_durable_ran", default=None)


async def _counted(scope: Scope, durable: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A durable call under usage limits: the model usage of a step read back from its record
    counts against the run's budget (docs/budgets.md, resuming).

    A step that is itself a model call (a chat model, an agent's turn) holds its usage in its
    result. Any other step that used models (a function step calling `llm.generate`, an agent,
    a chain called inside a step) gets a usage record beside its result, `<key>-usage` in the
    task's result store, holding everything it and its sub-steps used.
    """
    ran: list[bool] = []
    probe = ran_probe.set(ran)
    try:
        with tallied() as tally:
            result = await durable(*args, **kwargs)
    finally:
        ran_probe.reset(probe)
    key = f"{scope.key}-usage"
    if not ran:
        count_replayed(await _read_usage(durable, key, scope.path) or usage_in(result))
        return result
    used, held = tally.usage(), usage_in(result)
    if used.requests and (held is None or (held.requests, held.total_tokens) != (used.requests, used.total_tokens)):
        try:
            store = await get_result_store().aupdate_for_task(durable)
            await store.awrite(used.as_dict(), key=key)
        except Exception as exc:  # the step's result is safe; only a resumed budget would start lower
            logger.warning("could not record the model usage of step %s beside its result: %s", scope.path, exc)
    return result


async def _read_usage(task: Any, key: str, path: str) -> RunUsage | None:
    try:
        store = await get_result_store().aupdate_for_task(task)
        if not await store.aexists(key):
            return None
        return RunUsage(**(await store.aread(key)).result)
    except Exception as exc:
        logger.warning("could not read the model usage recorded beside step %s: %s", path, exc)
        return None


@dataclass
class DurableKey(CachePolicy):
    """Prefect cache policy: the key of the current durable scope (see the module docstring)."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        scope = current.get()
        if scope is None or not scope.enabled or not scope.root:
            return None
        return scope.key


DURABLE_KEY = DurableKey()


def durable_options() -> dict[str, Any]:
    """Keyword arguments of `Task.with_options` for a task's durable variant."""
    return {"cache_policy": DURABLE_KEY, "persist_result": True}


def check_durable(value: Any, where: str) -> bool:
    return check_bool(value, f"{where}: durable")
