"""Deployable flow: answer a question from the vector store, citing sources.

The RAG chain's two steps (retrieve, generate) run as task runs of this flow run, retried by
Prefect. With a `session_id`, the conversation is remembered across runs (the model sees a
window of the last `memory_turns` turns), so a scheduled or repeated deployment run continues
it. Where the turns are kept:

- `memory_block`: the name of a Prefect filesystem block (`LocalFileSystem` on a shared mount,
  `RemoteFileSystem` on s3:// ...) — workers on every machine share the conversations, and two
  turns of one session answered at once are both kept (one object per turn);
- otherwise files under `memory_dir` (default `$PREFECT_HOME/beluga/memory`) on this worker.

Retention: at most `memory_max_turns` turns per session (default 50) and sessions untouched for
`memory_ttl_days` (default 30) are removed when next used (and by the store's `prune()`); `None`
keeps them. The run logs the session and store; the `rag-answers` artifact shows answers with
their sources (path in the ingested folder and chunk number), the session, tokens and cost.
Cross-run cache (`cache`, default on; `cache_days` bounds reuse): the question's embedding and the
model's reply are cached by value in Prefect's result storage, so asking the same question with
the same context again, from any worker sharing that storage, makes no embedding and no model call
(the search itself always runs); see docs/cache.md. `cached` in the result lists the hits.
When the store is empty the run logs a warning (and the artifact shows it) naming `rag-ingest`.

The chat model, embedder and store are blocks chosen by name (see `blocks/create_blocks.py`):

    python flows/rag_answer.py "How are Prefect tasks retried?"
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_HOME

from prefect_beluga import memory, rag
from prefect_beluga.artifacts import publish_answers
from prefect_beluga.blocks import (
    DEFAULT_CHAT_MODEL_BLOCK,
    DEFAULT_EMBEDDER_BLOCK,
    DEFAULT_STORE_BLOCK,
    load_rag_components,
)
from prefect_beluga.memory_blocks import aload_memory_store
from prefect_beluga.orchestration import cache_hits


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
    memory_block: str | None = None,
    memory_max_turns: int | None = 50,
    memory_ttl_days: float | None = 30.0,
    cache: bool = True,
    cache_days: float | None = None,
) -> dict[str, Any]:
    """Answer `question` from the store; returns `output`, `sources`, `usage`, `model` and
    `cached` (the steps answered from the cross-run cache, e.g. `["embed-query", "generate"]`)."""
    logger = get_run_logger()
    llm, embedder, store = await load_rag_components(chat_model_block, embedder_block, vector_store_block)
    conversation = turns_store = None
    if session_id is not None:
        memory.store.check_session_id(session_id)
        retention = {"max_turns": memory_max_turns,
                     "ttl": None if memory_ttl_days is None else memory_ttl_days * 86400.0}
        if memory_block is not None:
            turns_store = await aload_memory_store(memory_block, **retention)
        else:
            turns_store = memory.FileMemoryStore(memory_dir or default_memory_dir(), **retention)
        conversation = memory.new_memory(memory.MemoryType.WINDOW, k=memory_turns, store=turns_store)
        logger.info("conversation session %r, kept in %s", session_id, turns_store.describe())
    chain = rag.build_rag_chain(
        store, embedder, llm, k=k, memory=conversation, retries=2, retry_delay=[1.0, 5.0], subflow=False,
        cache=cache, cache_expiration=None if cache_days is None else timedelta(days=cache_days),
    )
    state: dict[str, Any] = {"input": question}
    if session_id is not None:
        state["session_id"] = session_id
    with cache_hits() as record:
        answer = await chain.ainvoke(state)
    result = {key: answer[key] for key in ("output", "sources", "usage", "model")}
    result["cached"] = record.hits
    warning = None
    if not answer.get("documents"):
        warning = (f"the vector store {vector_store_block!r} returned nothing for this question: it is empty or "
                   f"holds nothing for the embedder {embedder_block!r}; {rag.steps.EMPTY_STORE_HINT}")
        logger.warning(warning)
    # Artifact keys are global on the API: "<flow name>s", so a renamed copy of this flow (the
    # quickstart's `quickstart-rag-answer`) never adds versions to `rag-answers`.
    await publish_answers([{"question": question, **result}], key=f"{FlowRunContext.get().flow.name}s",
                          session=session_id, memory_store=turns_store.describe() if turns_store else None,
                          warning=warning)
    logger.info("answered from %d source(s) with %s%s", len(result["sources"]), result["model"],
                " (model reply from the cache)" if "generate" in record.hits else "")
    return result


if __name__ == "__main__":
    import asyncio

    asyncio.run(rag_answer(" ".join(sys.argv[1:]) or "What is retrieval-augmented generation?"))
