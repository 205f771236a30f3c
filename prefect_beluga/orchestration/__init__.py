"""Chains, graphs and workflows, and the one place Runnables become Prefect tasks."""

from prefect_beluga.orchestration.chain import Chain
from prefect_beluga.orchestration.orchestrator import Orchestrator
from prefect_beluga.orchestration.tasks import RetryPolicy

__all__ = ["Chain", "Orchestrator", "RetryPolicy"]
