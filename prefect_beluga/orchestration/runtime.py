"""Where a chain or graph runs: its own flow run, a subflow of the caller's, or the caller's run.

Outside any flow run, `invoke` starts one flow run named after the chain or graph, on Prefect's
async engine. Inside a flow run it nests: as a subflow by default (the UI groups its steps), or,
with `subflow=False`, as task runs of the caller's flow run.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from prefect import Flow, tags
from prefect.context import FlowRunContext

from prefect_beluga.core.config import RunConfig

Body = Callable[[dict[str, Any], RunConfig], Awaitable[Any]]

# The RunConfig of the flow run about to start; flow parameters carry only the input.
_starting_config: ContextVar[RunConfig] = ContextVar("prefect_beluga_starting_config")


def flow_name(name: str) -> str:
    """`name` made valid as a Prefect flow name (no / % & < >)."""
    return re.sub(r"[/%&<>]", "-", name) or "runnable"


def body_flow(name: str, body: Body, *, description: str | None = None) -> Flow:
    """A Prefect async flow named `name` that runs `body(input, config)`.

    Built once per chain or graph: creating a Flow is not free, starting one run of it is cheap.
    """

    async def run(input: dict[str, Any]) -> Any:
        return await body(input, _starting_config.get(RunConfig()))

    return Flow(
        run,
        name=flow_name(name),
        description=description,
        validate_parameters=False,
        persist_result=False,
    )


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
            return await flow(state)
        finally:
            _starting_config.reset(token)
