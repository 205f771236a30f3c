"""The Orchestrator facade of the Beluga API: one place to create chains and graphs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect_beluga.core.runnable import Runnable
from prefect_beluga.orchestration.chain import Chain
from prefect_beluga.orchestration.graph import Graph


class Orchestrator:
    """Creates chains and graphs (workflows come with the Workflow issue).

    Examples:
        >>> orchestrator = Orchestrator()
        >>> chain = orchestrator.create_chain([step1, step2], retries=2)
        >>> graph = orchestrator.create_graph(name="rag")
    """

    def create_chain(self, steps: Sequence[Runnable | Callable[..., Any]], **options: Any) -> Chain:
        """A `Chain` of `steps`; `options` are Chain's keyword arguments."""
        return Chain(steps, **options)

    def create_graph(self, **options: Any) -> Graph:
        """An empty `Graph` builder; `options` are Graph's keyword arguments."""
        return Graph(**options)
