"""The Orchestrator facade of the Beluga API: one place to create chains, graphs and workflows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect_beluga.core.runnable import Runnable
from prefect_beluga.orchestration.chain import Chain
from prefect_beluga.orchestration.graph import Graph
from prefect_beluga.orchestration.workflow import Workflow

__all__ = ["Orchestrator"]


class Orchestrator:
    """Creates chains, graphs and workflows.

    Examples:
        ```python
        from prefect_beluga import Orchestrator

        def step1(state):
            return {"topic": state["input"].removeprefix("What is ").rstrip("?")}

        def step2(state):
            return {"output": f"{state['topic']} is a field of AI."}

        orchestrator = Orchestrator()
        chain = orchestrator.create_chain([step1, step2], retries=2)
        graph = orchestrator.create_graph(name="rag")
        workflow = orchestrator.create_workflow(chain, workflow_id="rag-workflow")
        workflow_id, run_id = workflow.execute({"input": "What is ML?"})
        workflow.get_result(workflow_id, run_id)["output"]  # -> 'ML is a field of AI.'
        ```
    """

    def create_chain(self, steps: Sequence[Runnable | Callable[..., Any]], **options: Any) -> Chain:
        """A `Chain` of `steps`; `options` are Chain's keyword arguments."""
        return Chain(steps, **options)

    def create_graph(self, **options: Any) -> Graph:
        """An empty `Graph` builder; `options` are Graph's keyword arguments."""
        return Graph(**options)

    def create_workflow(self, fn: Any, *, workflow_id: str | None = None, **options: Any) -> Workflow:
        """A `Workflow` running `fn` (a function, Runnable, Chain, Graph or Prefect flow).

        `workflow_id` is Beluga's `WithWorkflowID`; `options` are Workflow's keyword arguments
        (`retries`, `retry_delay`, `timeout`, `result_storage`, `distributed`, ...).
        """
        return Workflow(fn, workflow_id=workflow_id, **options)
