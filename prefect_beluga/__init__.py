"""prefect-beluga: Beluga AI's Runnables, Chains, Graphs and Workflows as Prefect 3 work.

Examples:
    A chain of one step, run as a Prefect flow with the step as a task:
    ```python
    from prefect_beluga import Chain


    def shout(state):
        return {"output": state["input"].upper()}


    print(Chain([shout], name="shout").invoke("hello"))  # {'input': 'hello', 'output': 'HELLO'}
    ```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_beluga import agents, blocks, embeddings, llms, memory, rag, schema, tools, vectorstores
    from prefect_beluga.core import (
        AgentError,
        AgentIterationLimit,
        AgentOutputError,
        BelugaError,
        ChainTimeoutError,
        EmptyStoreWarning,
        GraphError,
        GraphNodesFailed,
        GraphRecursionError,
        GraphValidationError,
        MCPToolError,
        PrefectInternalsWarning,
        ProviderResponseError,
        RunConfig,
        Runnable,
        StateConflictError,
        StepOutputError,
        TokenizerFallbackWarning,
        TokenizerUnavailable,
        ToolArgumentsError,
        UncacheableInputWarning,
        UnknownWorkflowRun,
        UsageLimitExceeded,
        ValidationError,
        WorkflowCancelled,
        WorkflowError,
        WorkflowFailed,
        WorkflowNotDeployed,
        WorkflowTimeout,
    )
    from prefect_beluga.orchestration import (
        END,
        Chain,
        CompiledGraph,
        Graph,
        GraphRun,
        Map,
        Orchestrator,
        RetryPolicy,
        Workflow,
        WorkflowRun,
        apublish,
        await_for_signal,
        publish,
        wait_for_signal,
    )
    from prefect_beluga.usage import UsageLimits

# Where each public name lives. Nothing is imported until first used (PEP 562), so
# `import prefect_beluga.llms` does not load Prefect, orchestration or blocks.
_SUBMODULES = frozenset({"agents", "blocks", "embeddings", "llms", "memory", "rag", "schema", "tools", "vectorstores"})
_ORIGINS: dict[str, str] = {
    "AgentError": "prefect_beluga.core",
    "AgentIterationLimit": "prefect_beluga.core",
    "AgentOutputError": "prefect_beluga.core",
    "BelugaError": "prefect_beluga.core",
    "ChainTimeoutError": "prefect_beluga.core",
    "GraphError": "prefect_beluga.core",
    "GraphNodesFailed": "prefect_beluga.core",
    "GraphRecursionError": "prefect_beluga.core",
    "GraphValidationError": "prefect_beluga.core",
    "ProviderResponseError": "prefect_beluga.core",
    "RunConfig": "prefect_beluga.core",
    "Runnable": "prefect_beluga.core",
    "StateConflictError": "prefect_beluga.core",
    "StepOutputError": "prefect_beluga.core",
    "TokenizerUnavailable": "prefect_beluga.core",
    "UnknownWorkflowRun": "prefect_beluga.core",
    "UsageLimitExceeded": "prefect_beluga.core",
    "ValidationError": "prefect_beluga.core",
    "WorkflowCancelled": "prefect_beluga.core",
    "WorkflowError": "prefect_beluga.core",
    "WorkflowFailed": "prefect_beluga.core",
    "WorkflowNotDeployed": "prefect_beluga.core",
    "WorkflowTimeout": "prefect_beluga.core",
    "EmptyStoreWarning": "prefect_beluga.core",
    "MCPToolError": "prefect_beluga.core",
    "PrefectInternalsWarning": "prefect_beluga.core",
    "UncacheableInputWarning": "prefect_beluga.core",
    "TokenizerFallbackWarning": "prefect_beluga.core",
    "ToolArgumentsError": "prefect_beluga.core",
    "END": "prefect_beluga.orchestration",
    "Chain": "prefect_beluga.orchestration",
    "CompiledGraph": "prefect_beluga.orchestration",
    "Graph": "prefect_beluga.orchestration",
    "GraphRun": "prefect_beluga.orchestration",
    "Map": "prefect_beluga.orchestration",
    "Orchestrator": "prefect_beluga.orchestration",
    "RetryPolicy": "prefect_beluga.orchestration",
    "Workflow": "prefect_beluga.orchestration",
    "WorkflowRun": "prefect_beluga.orchestration",
    "apublish": "prefect_beluga.orchestration",
    "await_for_signal": "prefect_beluga.orchestration",
    "publish": "prefect_beluga.orchestration",
    "wait_for_signal": "prefect_beluga.orchestration",
    "UsageLimits": "prefect_beluga.usage",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"prefect_beluga.{name}")
    elif name in _ORIGINS:
        value = getattr(importlib.import_module(_ORIGINS[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AgentError",
    "AgentIterationLimit",
    "AgentOutputError",
    "BelugaError",
    "Chain",
    "ChainTimeoutError",
    "CompiledGraph",
    "END",
    "EmptyStoreWarning",
    "Graph",
    "GraphError",
    "GraphNodesFailed",
    "GraphRun",
    "GraphRecursionError",
    "GraphValidationError",
    "MCPToolError",
    "PrefectInternalsWarning",
    "Map",
    "Orchestrator",
    "ProviderResponseError",
    "RetryPolicy",
    "RunConfig",
    "Runnable",
    "StateConflictError",
    "StepOutputError",
    "TokenizerFallbackWarning",
    "TokenizerUnavailable",
    "ToolArgumentsError",
    "UncacheableInputWarning",
    "UnknownWorkflowRun",
    "UsageLimitExceeded",
    "UsageLimits",
    "ValidationError",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowNotDeployed",
    "WorkflowRun",
    "WorkflowTimeout",
    "agents",
    "blocks",
    "embeddings",
    "llms",
    "memory",
    "apublish",
    "await_for_signal",
    "publish",
    "rag",
    "schema",
    "tools",
    "vectorstores",
    "wait_for_signal",
]
