"""Deployable flow: map-reduce summary of what the vector store holds on a topic.

retrieve (the `k` chunks nearest to the topic) -> summarize (a `Map`: one task run per chunk,
`summarize[0]`, `summarize[1]`, ..., each retried alone, at most `max_concurrency` at once)
-> combine (one call summarizing the summaries). The chain's steps are task runs of this flow
run; give the chat model block a `rate_limit` (see `prefect_beluga.limits`) to keep many runs
of this flow under one provider budget.

The chat model, embedder and store are blocks chosen by name (see `blocks/create_blocks.py`):

    python flows/summarize.py "retries"
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger

from prefect_beluga import Chain, Map
from prefect_beluga.blocks import (
    DEFAULT_CHAT_MODEL_BLOCK,
    DEFAULT_EMBEDDER_BLOCK,
    DEFAULT_STORE_BLOCK,
    load_rag_components,
)


def build_summarize_chain(store: Any, embedder: Any, llm: Any, *, k: int, max_concurrency: int) -> Chain:
    """retrieve -> Map(summarize one chunk) -> combine, as a chain of the caller's flow run."""

    async def retrieve(state: dict[str, Any]) -> dict[str, Any]:
        docs, _ = await store.asimilarity_search_by_query(state["input"], k, embedder)
        return {"chunks": [d.page_content for d in docs],
                "sources": [d.metadata.get("source") for d in docs]}

    async def summarize(state: dict[str, Any]) -> dict[str, Any]:
        reply = await llm.agenerate(
            f"Summarize in one sentence what this passage says about {state['input']!r}:\n\n{state['item']}"
        )
        return {"summary": reply.content, "source": state["sources"][state["index"]]}

    async def combine(state: dict[str, Any]) -> dict[str, Any]:
        if not state["summaries"]:
            return {"output": "", "sources": []}
        joined = "\n".join(f"- {s['summary']}" for s in state["summaries"])
        reply = await llm.agenerate(f"Combine these notes on {state['input']!r} into one paragraph:\n{joined}")
        return {"output": reply.content}

    return Chain(
        [retrieve, Map(summarize, over="chunks", into="summaries", max_concurrency=max_concurrency), combine],
        name="summarize", retries=2, retry_delay=[1.0, 5.0], subflow=False,
    )


@flow(name="summarize", persist_result=True)
async def summarize(
    topic: str,
    chat_model_block: str = DEFAULT_CHAT_MODEL_BLOCK,
    embedder_block: str = DEFAULT_EMBEDDER_BLOCK,
    vector_store_block: str = DEFAULT_STORE_BLOCK,
    k: int = 8,
    max_concurrency: int = 4,
) -> dict[str, Any]:
    """Summarize what the store holds on `topic`; returns `output`, `summaries` and `sources`."""
    llm, embedder, store = await load_rag_components(chat_model_block, embedder_block, vector_store_block)
    chain = build_summarize_chain(store, embedder, llm, k=k, max_concurrency=max_concurrency)
    result = await chain.ainvoke({"input": topic})
    get_run_logger().info("summarized %d chunk(s) on %r", len(result["summaries"]), topic)
    return {key: result[key] for key in ("output", "summaries", "sources")}


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(summarize(" ".join(sys.argv[1:]) or "retries"))["output"])
