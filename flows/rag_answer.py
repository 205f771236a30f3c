"""Deployable flow: answer a question from the vector store, citing sources.

The RAG chain's two steps (retrieve, generate) run as task runs of this flow run, retried by
Prefect. With a `session_id`, the conversation is remembered across runs (a window of the last
turns, kept in files under `memory_dir`), so a scheduled or repeated deployment run continues
it. Answers, sources, token usage and estimated cost go to a table artifact.

The chat model, embedder and store are blocks chosen by name (see `blocks/create_blocks.py`):

    python flows/rag_answer.py "How are Prefect tasks retried?"
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.settings import PREFECT_HOME

from prefect_beluga import memory, rag
from prefect_beluga.artifacts import publish_answers
from prefect_beluga.blocks import (
    DEFAULT_CHAT_MODEL_BLOCK,
    DEFAULT_EMBEDDER_BLOCK,
    DEFAULT_STORE_BLOCK,
    ChatModelBlock,
    EmbedderBlock,
    load_block,
    load_vector_store_block,
)


def default_memory_dir() -> str:
    """Where conversations are kept unless `memory_dir` says otherwise: under PREFECT_HOME."""
    return os.environ.get("BELUGA_MEMORY_DIR") or str(Path(PREFECT_HOME.value()) / "beluga" / "memory")


@flow(name="rag-answer", persist_result=True)
async def rag_answer(
    question: str,
    chat_model_block: str = DEFAULT_CHAT_MODEL_BLOCK,
    embedder_block: str = DEFAULT_EMBEDDER_BLOCK,
    vector_store_block: str = DEFAULT_STORE_BLOCK,
    k: int = 4,
    session_id: str | None = None,
    memory_turns: int = 5,
    memory_dir: str | None = None,
) -> dict[str, Any]:
    """Answer `question` from the store; returns `output`, `sources`, `usage` and `model`."""
    llm = (await load_block(ChatModelBlock, chat_model_block)).get_chat_model()
    embedder = (await load_block(EmbedderBlock, embedder_block)).get_embedder()
    store = (await load_vector_store_block(vector_store_block)).get_store()
    conversation = None
    if session_id is not None:
        store_dir = memory.FileMemoryStore(memory_dir or default_memory_dir())
        conversation = memory.new_memory(memory.MemoryType.WINDOW, k=memory_turns, store=store_dir)
    chain = rag.build_rag_chain(
        store, embedder, llm, k=k, memory=conversation, retries=2, retry_delay=[1.0, 5.0], subflow=False
    )
    state: dict[str, Any] = {"input": question}
    if session_id is not None:
        state["session_id"] = session_id
    answer = await chain.ainvoke(state)
    result = {key: answer[key] for key in ("output", "sources", "usage", "model")}
    await publish_answers([{"question": question, **result}], key="rag-answers")
    get_run_logger().info("answered from %d source(s) with %s", len(result["sources"]), result["model"])
    return result


if __name__ == "__main__":
    import asyncio

    asyncio.run(rag_answer(" ".join(sys.argv[1:]) or "What is retrieval-augmented generation?"))
