"""The public surface is deliberate: nothing leaks into it by accident."""

import importlib

import pytest

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
    # Shape (issue 26): every exception and warning in the tree of core/errors.py
    "EmptyStoreWarning",
    "MCPToolError",
    "PrefectInternalsWarning",
    "TokenizerFallbackWarning",
    "ToolArgumentsError",
    "UncacheableInputWarning",
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


#: Every subpackage's `__all__`, pinned (as httpx's test_exported_members does): a name joins or
#: leaves a public surface only by a change to this list.
SUBPACKAGES = {
    "agents": {
        "Agent", "AgentIterationLimit", "AgentOutputError", "OUTPUT_MODES", "OUTPUT_TOOL", "OutputMode",
    },
    "blocks": {
        "AzureOpenAICredentials", "ChatModelBlock", "DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK",
        "DEFAULT_CHAT_MODEL_BLOCK", "DEFAULT_EMBEDDER_BLOCK", "DEFAULT_OPENAI_CREDENTIALS_BLOCK",
        "DEFAULT_PINECONE_CREDENTIALS_BLOCK", "DEFAULT_STORE_BLOCK", "EmbeddedVectorStoreBlock",
        "EmbedderBlock", "OpenAICredentials", "PineconeCredentials", "PineconeVectorStoreBlock",
        "RagComponents", "VectorStoreBlock", "asave_default_blocks", "block_names", "load_block",
        "load_rag_components", "load_vector_store_block", "save_default_blocks",
    },
    "core": {
        "AgentError", "AgentIterationLimit", "AgentOutputError", "BelugaError", "ChainTimeoutError",
        "EmptyStoreWarning", "GraphError", "GraphNodesFailed", "GraphRecursionError", "GraphValidationError",
        "MCPToolError", "PrefectInternalsWarning", "ProviderResponseError", "RunConfig", "Runnable",
        "RunnableCallable", "StateConflictError", "StepOutputError", "TokenizerFallbackWarning",
        "TokenizerUnavailable", "ToolArgumentsError", "UncacheableInputWarning", "UnknownWorkflowRun",
        "UsageLimitExceeded", "ValidationError",
        "WorkflowCancelled", "WorkflowError", "WorkflowFailed", "WorkflowNotDeployed", "WorkflowTimeout",
        "coerce_to_runnable", "ensure_config",
    },
    "embeddings": {
        "AzureOpenAIEmbedder", "Embedder", "HashingEmbedder", "OpenAIEmbedder",
    },
    "llms": {
        "AzureOpenAIChatModel", "Capabilities", "ChatModel", "Config", "Factory", "OFFLINE_PREFIX",
        "OfflineChatModel", "OpenAIChatModel", "ProviderResponseError", "SERVERS", "Server", "create_provider",
        "estimate_cost",
    },
    "mcp": {
        "MCPServer", "MCPServerBlock", "MCPTool", "MCPToolError", "create_server", "http_app", "serve",
        "server_from_config", "servers_from_config",
    },
    "memory": {
        "BaseMemory", "BufferMemory", "FileMemoryStore", "InMemoryStore", "MemoryStore", "MemoryType",
        "SharedMemoryStore", "TokenWindowMemory", "WindowMemory", "new_memory",
    },
    "orchestration": {
        "CacheHits", "Chain", "CompiledGraph", "END", "Graph", "GraphRun", "Map", "Orchestrator",
        "RetryPolicy", "UncacheableInputWarning", "Workflow", "WorkflowRun", "apublish", "await_for_signal",
        "cache_hits", "publish", "wait_for_signal",
    },
    "rag": {
        "EmptyStoreWarning", "GenerationStep", "RetrievalStep", "SourceScope", "TokenTextSplitter",
        "build_rag_chain", "chunk_id", "format_context", "load_documents", "new_or_changed", "removed_ids",
        "source_scope", "stale_ids",
    },
    "schema": {
        "AIMessage", "AnyMessage", "BaseMessage", "ChatResult", "Document", "HumanMessage", "SystemMessage",
        "ToolCall", "ToolMessage", "Usage",
    },
    "server": {
        "create_app",
    },
    "testing": {
        "Fault", "OpenAIServer", "PineconeServer", "PrefectServer", "RecordedRequest", "ThrowawayPostgres",
    },
    "tools": {
        "Tool", "ToolArgumentsError", "Toolset", "ToolsetSession", "tool",
    },
    "usage": {
        "LIMITS", "Budget", "RunUsage", "UsageLimitExceeded", "UsageLimits", "current_usage", "scope",
    },
    "vectorstores": {
        "Filter", "InMemoryVectorStore", "PineconeVectorStore", "VectorStore", "document_id",
    },
}


@pytest.mark.parametrize("name", sorted(SUBPACKAGES))
def test_each_subpackage_exports_exactly_its_pinned_names(name):
    module = importlib.import_module(f"prefect_beluga.{name}")
    assert set(module.__all__) == SUBPACKAGES[name]
    assert len(module.__all__) == len(set(module.__all__)), "a name listed twice"
    for attribute in module.__all__:
        assert hasattr(module, attribute), f"prefect_beluga.{name}.{attribute} is listed but missing"
