"""The public surface is deliberate: nothing leaks into it by accident."""

import prefect_beluga

EXPECTED = {
    "BelugaError", "Chain", "ChainTimeoutError", "CompiledGraph", "END", "Graph", "GraphError",
    "GraphNodesFailed", "GraphRecursionError", "GraphRun", "GraphValidationError", "Orchestrator",
    "RunConfig", "Runnable", "StateConflictError", "StepOutputError", "ValidationError",
    "blocks", "embeddings", "llms", "memory", "rag", "schema", "vectorstores",
    # Workflows (issue 6)
    "UnknownWorkflowRun", "Workflow", "WorkflowCancelled", "WorkflowError", "WorkflowFailed",
    "WorkflowNotDeployed", "WorkflowRun", "WorkflowTimeout", "publish", "wait_for_signal",
    # Agents (issue 17)
    "AgentError", "AgentIterationLimit", "AgentOutputError", "agents", "tools",
}


def test_all_is_exactly_the_public_api():
    assert set(prefect_beluga.__all__) == EXPECTED
    for name in prefect_beluga.__all__:
        assert hasattr(prefect_beluga, name), name
