"""Where a chain's, graph's or workflow's usage limits are opened, and shown on its run.

`budgeted(limits, name)` opens the run's budget (`prefect_beluga.usage.scope`) around its body,
inside its flow run, so every task run of the flow (steps, graph nodes, Map items, an agent's
turns) sees the same budget; messages name the step by its Prefect task run. When the body
ends (finished or failed), the usage against the limits is attached to the flow run as a
markdown artifact. `models_in` finds the chat models a runnable names, whose prices a
`cost_usd` limit checks when it is set up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from prefect.artifacts import acreate_markdown_artifact
from prefect.context import FlowRunContext, TaskRunContext

from prefect_beluga.usage import LIMITS, Budget, UsageLimits, scope
from prefect_beluga.usage._limits import check_limits, check_prices, priced_as

logger = logging.getLogger(__name__)


def _task_run_name() -> str | None:
    context = TaskRunContext.get()
    return None if context is None else context.task_run.name


def setup(value: Any, runnable: Any, where: str) -> UsageLimits | None:
    """`usage_limits=value` of `runnable` checked; with `cost_usd`, the prices of its models too."""
    limits = check_limits(value, where)
    if limits is not None:
        check_prices(limits, list(models_in(runnable)), where)
    return limits


def models_in(runnable: Any, _seen: set[int] | None = None) -> Iterator[tuple[str, str | None]]:
    """(model, provider) of the chat models inside `runnable`: itself, an agent's model, the
    steps of a chain, the nodes of a graph, a Map's runnable (not those a function calls)."""
    from prefect_beluga.llms.base import ChatModel

    seen = _seen if _seen is not None else set()
    if id(runnable) in seen:
        return
    seen.add(id(runnable))
    if isinstance(runnable, ChatModel):
        yield priced_as(runnable.config)
        return
    inner: list[Any] = []
    if getattr(runnable, "llm", None) is not None:
        inner.append(runnable.llm)
    inner.extend(getattr(runnable, "steps", ()) or ())
    nodes = getattr(runnable, "_nodes", None) or getattr(runnable, "nodes", None)
    if isinstance(nodes, dict) or hasattr(nodes, "values"):
        inner.extend(getattr(node, "runnable", node) for node in nodes.values())
    if getattr(runnable, "runnable", None) is not None:
        inner.append(runnable.runnable)
    for each in inner:
        yield from models_in(each, seen)


@asynccontextmanager
async def budgeted(limits: UsageLimits | None, name: str, flow: Any = None) -> AsyncIterator[Budget | None]:
    """The run's budget around its body (nothing when `limits` is None); its artifact after,
    when the body runs as a flow run of its own (`flow`'s run; any flow run when `flow` is
    None): a chain run inline in the caller's flow run (`subflow=False`) adds no artifact
    there, each one costing an API write (~30 ms on the embedded SQLite API)."""
    if limits is None:
        yield None
        return
    with scope(limits, name=name, step_name=_task_run_name) as budget:
        try:
            yield budget
        finally:
            context = FlowRunContext.get()
            if context is not None and (flow is None or getattr(context.flow, "fn", None) is flow.fn):
                await _report(budget)


def usage_markdown(budget: Budget) -> str:
    """The budget's usage against its limits, as a markdown table."""
    usage = budget.usage()
    lines = [f"**Usage limits of {budget.name}**", "", "| | used | limit |", "| --- | --- | --- |"]
    for field in LIMITS:
        used = getattr(usage, field)
        limit = getattr(budget.limits, field)
        if field == "cost_usd":
            used = "unknown" if used is None else f"${used:.6f}"
            limit = "-" if limit is None else f"${limit}"
        lines.append(f"| {field} | {used} | {'-' if limit is None else limit} |")
    return "\n".join(lines)


async def _report(budget: Budget) -> None:
    try:
        await acreate_markdown_artifact(
            usage_markdown(budget), description=f"Usage of {budget.name}: {budget.usage()}"
        )
    except Exception as exc:  # pragma: no cover - an artifact must not fail the run
        logger.warning("could not attach the usage artifact of %s: %s", budget.name, exc)
