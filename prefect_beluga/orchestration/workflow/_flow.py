"""The Prefect flow of a workflow: the user's function, run in the workflow's durable scope and budget."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

from prefect import Flow

from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.runnable import coerce_to_runnable
from prefect_beluga.orchestration._usage import budgeted
from prefect_beluga.orchestration.recovery import check_resumes, explain_crash
from prefect_beluga.orchestration.workflow._background import durable
from prefect_beluga.usage import UsageLimits
from prefect_beluga.usage import scope as usage_scope


async def _check_resumes() -> None:
    """In a run resumed after crashes: stop a crash loop (see `recovery.check_resumes`)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_run = context.flow_run if context else None
    if flow_run is None or flow_run.run_count <= 1 or flow_run.deployment_id is None:
        return
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await check_resumes(flow_run, client)


def build_flow(
    fn: Any, workflow_id: str, usage_limits: UsageLimits | None, options: dict[str, Any]
) -> tuple[Flow, bool]:
    """The flow running `fn` with the Prefect flow `options`, and whether it takes the input
    dict whole (as `input`) rather than as its parameters (a Prefect `@flow` with others)."""
    options = {**options, "name": workflow_id}
    where = f"workflow {workflow_id!r}"
    if isinstance(fn, Flow):
        options["on_crashed"] = [*fn.on_crashed_hooks, explain_crash]
        user_fn = fn.fn
        takes_input = list(inspect.signature(user_fn).parameters) == ["input"]
        flow = fn.with_options(**options)
        if inspect.iscoroutinefunction(user_fn):

            @functools.wraps(user_fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                await _check_resumes()
                async with budgeted(usage_limits, where):
                    with durable():
                        return await user_fn(*args, **kwargs)

            flow.fn = run_async
        else:

            @functools.wraps(user_fn)
            def run_sync_fn(*args: Any, **kwargs: Any) -> Any:
                run_sync(_check_resumes())
                with usage_scope(usage_limits, name=where), durable():
                    return user_fn(*args, **kwargs)

            flow.fn = run_sync_fn
        return flow, takes_input
    runnable = coerce_to_runnable(fn, where=where)

    async def run(input: dict[str, Any]) -> Any:
        await _check_resumes()
        async with budgeted(usage_limits, where):
            with durable():
                return await runnable.ainvoke(input)

    run.__qualname__ = run.__name__ = re.sub(r"\W", "_", workflow_id)
    return Flow(run, on_crashed=[explain_crash], **options), True
