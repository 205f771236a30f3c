"""The public surface is deliberate: nothing leaks into it by accident."""

import prefect_beluga

EXPECTED = {
    "BelugaError",
    "Chain",
    "ChainTimeoutError",
    "CompiledGraph",
    "END",
    "Graph",
    "GraphError",
    "GraphNodesFailed",
    "GraphRecursionError",
    "GraphRun",
    "GraphValidationError",
    "Map",
    "Orchestrator",
    "RunConfig",
    "Runnable",
    "StateConflictError",
    "StepOutputError",
    "ValidationError",
    "blocks",
    "embeddings",
    "llms",
    "memory",
    "rag",
    "schema",
    "vectorstores",
    # Workflows (issue 6)
    "UnknownWorkflowRun",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowNotDeployed",
    "WorkflowRun",
    "WorkflowTimeout",
    "apublish",
    "await_for_signal",
    "publish",
    "wait_for_signal",
    # Shape (issue 13): the retry policy, and every exception of the tree in core/errors.py
    "ProviderResponseError",
    "RetryPolicy",
    "TokenizerUnavailable",
    # Agents (issue 17)
    "AgentError",
    "AgentIterationLimit",
    "AgentOutputError",
    "agents",
    "tools",
    # Budgets (issue 30)
    "UsageLimitExceeded",
    "UsageLimits",
}


def test_every_exception_of_the_tree_is_exported():
    from prefect_beluga.core import errors

    classes = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, BaseException)}
    assert classes <= set(errors.__all__)
    assert classes <= set(prefect_beluga.__all__)
    for name in classes:
        assert name in errors.__doc__, f"{name} is not drawn in the exception tree of core/errors.py"


def test_all_is_exactly_the_public_api():
    assert set(prefect_beluga.__all__) == EXPECTED
    for name in prefect_beluga.__all__:
        assert hasattr(prefect_beluga, name), name
