"""Chains, graphs and workflows, and the one place Runnables become Prefect tasks."""

from prefect_beluga.orchestration.chain import Chain
from prefect_beluga.orchestration.graph import END, CompiledGraph, Graph, GraphRun
from prefect_beluga.orchestration.orchestrator import Orchestrator
from prefect_beluga.orchestration.tasks import RetryPolicy

__all__ = ["END", "Chain", "CompiledGraph", "Graph", "GraphRun", "Orchestrator", "RetryPolicy"]
