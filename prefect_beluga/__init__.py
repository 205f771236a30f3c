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

from prefect_beluga import agents, blocks, embeddings, llms, memory, rag, schema, tools, vectorstores
from prefect_beluga.core import (
    AgentError,
    AgentIterationLimit,
    AgentOutputError,
    BelugaError,
    ChainTimeoutError,
    GraphError,
    GraphNodesFailed,
    GraphRecursionError,
    GraphValidationError,
    ProviderResponseError,
    RunConfig,
    Runnable,
    StateConflictError,
    StepOutputError,
    TokenizerUnavailable,
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

__all__ = [
    "AgentError",
    "AgentIterationLimit",
    "AgentOutputError",
    "BelugaError",
    "Chain",
    "ChainTimeoutError",
    "CompiledGraph",
    "END",
    "Graph",
    "GraphError",
    "GraphNodesFailed",
    "GraphRun",
    "GraphRecursionError",
    "GraphValidationError",
    "Map",
    "Orchestrator",
    "ProviderResponseError",
    "RetryPolicy",
    "RunConfig",
    "Runnable",
    "StateConflictError",
    "StepOutputError",
    "TokenizerUnavailable",
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
