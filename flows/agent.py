"""Deployable flow: an agent that answers a question, searching the vector store as a tool.

Where `rag_answer` always retrieves once and then answers, this agent decides: the chat model
gets a `search_docs` tool over the store (the one `rag_ingest` fills) and calls it as often as
it needs, with queries of its own, before it answers. Every model turn and every search is a
Prefect task run of this flow run (named after the chat model and the tool), a search retried
by its own retry policy. Without an API key the offline model makes one search with the
question and quotes what it found.

    python flows/agent.py "How are Prefect tasks retried?"
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger

from prefect_beluga.agents import Agent
from prefect_beluga.blocks import (
    DEFAULT_CHAT_MODEL_BLOCK,
    DEFAULT_EMBEDDER_BLOCK,
    DEFAULT_STORE_BLOCK,
    load_rag_components,
)
from prefect_beluga.rag.steps import format_context, source_of
from prefect_beluga.tools import tool

SYSTEM_PROMPT = (
    "You answer questions about the documentation. Search it with the search_docs tool (more "
    "than once if the first results are not enough), answer only from what it returns, and "
    "cite the passages you used as [1], [2], ... If the documentation does not say, say so."
)


async def load_mcp_servers(block_names: list[str], config: str | None) -> list[Any]:
    """The MCP servers of the saved `MCPServerBlock`s named, then those of a client config file."""
    if not block_names and config is None:
        return []
    from prefect_beluga.mcp import MCPServerBlock, servers_from_config

    servers = [(await MCPServerBlock.aload(name)).get_server() for name in block_names]
    return servers + (servers_from_config(config) if config is not None else [])


@flow(name="agent-answer", persist_result=True)
async def agent_answer(
    question: str,
    chat_model_block: str = DEFAULT_CHAT_MODEL_BLOCK,
    embedder_block: str = DEFAULT_EMBEDDER_BLOCK,
    vector_store_block: str = DEFAULT_STORE_BLOCK,
    k: int = 4,
    max_iterations: int = 6,
    mcp_server_blocks: list[str] | None = None,
    mcp_config: str | None = None,
) -> dict[str, Any]:
    """Answer `question` with an agent searching the store; returns `output`, `sources`, `searches`."""
    llm, embedder, store = await load_rag_components(chat_model_block, embedder_block, vector_store_block)
    mcp_servers = await load_mcp_servers(mcp_server_blocks or [], mcp_config)
    sources: list[str] = []
    searches: list[str] = []

    @tool(retries=2, retry_delay=1.0, timeout=60)
    async def search_docs(query: str) -> str:
        """Search the documentation for passages about a question or topic.

        Args:
            query: What to look for, in a few words or a question.
        """
        documents, _ = await store.asimilarity_search_by_query(query, k, embedder)
        searches.append(query)
        sources.extend(source_of(d) for d in documents)
        return format_context(documents) or "No passages found."

    agent = Agent(llm, tools=[search_docs, *mcp_servers], system_prompt=SYSTEM_PROMPT, max_iterations=max_iterations,
                  name="docs-agent", model_retries=2, model_retry_delay=2.0)
    result = await agent.ainvoke({"input": question})
    get_run_logger().info("answered after %d search(es) with %s", len(searches), llm.name)
    return {"output": result["output"], "sources": list(dict.fromkeys(sources)), "searches": searches}


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(agent_answer(" ".join(sys.argv[1:]) or "How are Prefect tasks retried?")))
