"""Chains, graphs and workflows, and the one place Runnables become Prefect tasks."""

from prefect_beluga.orchestration._cache import CacheHits, UncacheableInputWarning, cache_hits
from prefect_beluga.orchestration._map import Map
from prefect_beluga.orchestration._progress import apublish, publish
from prefect_beluga.orchestration._tasks import RetryPolicy
from prefect_beluga.orchestration.chain import Chain
from prefect_beluga.orchestration.graph import END, CompiledGraph, Graph, GraphRun
from prefect_beluga.orchestration.orchestrator import Orchestrator
from prefect_beluga.orchestration.signals import await_for_signal, wait_for_signal
from prefect_beluga.orchestration.workflow import Workflow, WorkflowRun

__all__ = [
    "END",
    "CacheHits",
    "Chain",
    "CompiledGraph",
    "Graph",
    "GraphRun",
    "Map",
    "Orchestrator",
    "RetryPolicy",
    "UncacheableInputWarning",
    "Workflow",
    "WorkflowRun",
    "apublish",
    "await_for_signal",
    "cache_hits",
    "publish",
    "wait_for_signal",
]
