"""prefect-beluga: Beluga AI's Runnables, Chains, Graphs and Workflows as Prefect 3 work.

Examples:
    >>> from prefect_beluga import Chain
    >>> def shout(state):
    ...     return {"output": state["input"].upper()}
    >>> Chain([shout], name="shout").invoke("hello")
    {'input': 'hello', 'output': 'HELLO'}
"""

from prefect_beluga import memory
from prefect_beluga.core import (
    BelugaError,
    ChainTimeoutError,
    GraphError,
    GraphRecursionError,
    GraphValidationError,
    RunConfig,
    Runnable,
    StateConflictError,
    StepOutputError,
    ValidationError,
)
from prefect_beluga.orchestration import Chain, Orchestrator

__all__ = [
    "BelugaError",
    "Chain",
    "ChainTimeoutError",
    "GraphError",
    "GraphRecursionError",
    "GraphValidationError",
    "Orchestrator",
    "RunConfig",
    "Runnable",
    "StateConflictError",
    "StepOutputError",
    "ValidationError",
    "memory",
]
