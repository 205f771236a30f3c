"""The Runnable protocol, run configuration, errors and state rules. Depends on nothing of ours."""

from prefect_beluga.core.config import RunConfig, ensure_config
from prefect_beluga.core.errors import (
    AgentError,
    AgentIterationLimit,
    AgentOutputError,
    BelugaError,
    ChainTimeoutError,
    GraphError,
    GraphNodesFailed,
    GraphRecursionError,
    GraphValidationError,
    StateConflictError,
    StepOutputError,
    UnknownWorkflowRun,
    ValidationError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
    WorkflowNotDeployed,
    WorkflowTimeout,
)
from prefect_beluga.core.retry import is_permanent, retry_after_of, should_retry
from prefect_beluga.core.runnable import Runnable, RunnableCallable, coerce_to_runnable

__all__ = [
    "AgentError",
    "AgentIterationLimit",
    "AgentOutputError",
    "BelugaError",
    "ChainTimeoutError",
    "GraphError",
    "GraphNodesFailed",
    "GraphRecursionError",
    "GraphValidationError",
    "RunConfig",
    "Runnable",
    "RunnableCallable",
    "StateConflictError",
    "StepOutputError",
    "UnknownWorkflowRun",
    "ValidationError",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowNotDeployed",
    "WorkflowTimeout",
    "coerce_to_runnable",
    "ensure_config",
    "is_permanent",
    "retry_after_of",
    "should_retry",
]
