"""The Runnable protocol, run configuration, errors and state rules. Depends on nothing of ours."""

from prefect_beluga.core.config import RunConfig, ensure_config
from prefect_beluga.core.errors import (
    BelugaError,
    ChainTimeoutError,
    GraphError,
    GraphNodesFailed,
    GraphRecursionError,
    GraphValidationError,
    ProviderResponseError,
    StateConflictError,
    StepOutputError,
    TokenizerUnavailable,
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
    "BelugaError",
    "ChainTimeoutError",
    "GraphError",
    "GraphNodesFailed",
    "GraphRecursionError",
    "GraphValidationError",
    "ProviderResponseError",
    "RunConfig",
    "Runnable",
    "RunnableCallable",
    "StateConflictError",
    "StepOutputError",
    "TokenizerUnavailable",
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
