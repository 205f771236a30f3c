"""Deployable flow: ingest a folder (or glob) of text/markdown into a vector store.

Load -> split into token chunks -> keep only the chunks the store does not already hold ->
embed and upsert them in batches (one task run per batch, retried by Prefect) -> remove the
chunks of files under `source` that were deleted, emptied or shrank (the store lists the ids
under the folder's id prefix; `prune=False` removes only a shrunken file's tail). Chunk ids are
deterministic (a file's resolved path + chunk index, however `source` is spelled) and unchanged
chunks are skipped, so re-running — on a schedule, or after a run was killed midway — never
duplicates anything, embeds only what is missing and leaves nothing stale. Progress shows as a
progress artifact; the report artifact counts written, unchanged and removed chunks.

The embedder and the store are blocks chosen by name (see `blocks/create_blocks.py`):

    python flows/rag_ingest.py flows/docs
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_progress_artifact, acreate_table_artifact, aupdate_progress_artifact
from prefect.cache_policies import NONE
from prefect.context import FlowRunContext

from prefect_beluga import rag
from prefect_beluga.blocks import (
    DEFAULT_EMBEDDER_BLOCK,
    DEFAULT_STORE_BLOCK,
    EmbedderBlock,
    load_block,
    load_vector_store_block,
)
from prefect_beluga.embeddings.base import Embedder
from prefect_beluga.orchestration import RetryPolicy
from prefect_beluga.rag.ingest import batched
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores.base import VectorStore

BUNDLED_DOCS = Path(__file__).parent / "docs"


# Tasks here take the store and embedder objects as arguments: no cache policy, so Prefect never
# hashes (or persists) them — they hold clients and, for remote stores, credentials.
_OPTIONS: dict[str, Any] = {"cache_policy": NONE, "persist_result": False}
# Everything but permanent errors (bad input, auth, other 4xx) is retried, waiting at least as
# long as a 429/503's Retry-After asks.
_RETRIES = RetryPolicy(retries=3, retry_delay=[2, 10, 30]).task_options()


@task(name="load-and-split", task_run_name="load-and-split", **_OPTIONS)
async def load_and_split(source: str, chunk_size: int, chunk_overlap: int) -> list[Document]:
    return rag.TokenTextSplitter(chunk_size, chunk_overlap).split_documents(rag.load_documents(source))


@task(name="find-new-chunks", task_run_name="find-new-chunks", **_OPTIONS, **_RETRIES)
async def find_new_chunks(chunks: list[Document], store: VectorStore) -> list[Document]:
    return await rag.new_or_changed(chunks, store)


@task(name="embed-and-upsert", task_run_name="embed-and-upsert[{number}]", **_OPTIONS, **_RETRIES)
async def embed_and_upsert(batch: list[Document], store: VectorStore, embedder: Embedder, number: int) -> int:
    await store.aadd_documents(batch, embedder)
    return len(batch)


@task(name="delete-stale-chunks", task_run_name="delete-stale-chunks", **_OPTIONS, **_RETRIES)
async def delete_stale_chunks(chunks: list[Document], store: VectorStore, source: str, prune: bool) -> int:
    if prune:  # everything in scope the source no longer has: deleted files and shrunken tails
        stale = await rag.removed_ids(chunks, store, rag.source_scope(source))
    else:  # only the tails of files that shrank (what ingest did before pruning existed)
        stale = await rag.stale_ids(chunks, store)
    if stale:
        await store.adelete(stale)
    return len(stale)


@flow(name="rag-ingest", persist_result=True)
async def rag_ingest(
    source: str = str(BUNDLED_DOCS),
    embedder_block: str = DEFAULT_EMBEDDER_BLOCK,
    vector_store_block: str = DEFAULT_STORE_BLOCK,
    chunk_size: int = 400,
    chunk_overlap: int = 50,
    batch_size: int = 64,
    prune: bool = True,
) -> dict[str, Any]:
    """Ingest `source` (a file, folder or glob) into the store block `vector_store_block`.

    The store then mirrors `source`: with `prune` (the default) the chunks of files under it
    that are gone are removed too; files outside it are never touched. Returns counts: chunks
    found, written, unchanged (skipped) and removed (deleted from the store).
    """
    logger = get_run_logger()
    started = time.perf_counter()
    embedder = (await load_block(EmbedderBlock, embedder_block)).get_embedder()
    store_block = await load_vector_store_block(vector_store_block)
    store = store_block.get_store()

    chunks = await load_and_split(source, chunk_size, chunk_overlap)
    todo = await find_new_chunks(chunks, store)
    logger.info(
        "%d chunks in %s: %d new or changed, %d unchanged", len(chunks), source, len(todo), len(chunks) - len(todo)
    )

    # Artifact keys are global on the API: they follow the flow's name, so a renamed copy of this
    # flow (the quickstart's `quickstart-rag-ingest`) never adds versions to `rag-ingest-*`.
    flow_name = FlowRunContext.get().flow.name
    progress = await acreate_progress_artifact(
        0.0 if todo else 100.0, key=f"{flow_name}-progress", description=f"Chunks of {source} embedded and written"
    )
    written = 0
    for number, batch in enumerate(batched(todo, batch_size), 1):
        written += await embed_and_upsert(batch, store, embedder, number)
        store_block.persist(store)  # a run killed after this keeps the batches written so far
        await aupdate_progress_artifact(progress, 100.0 * written / len(todo))
    removed = await delete_stale_chunks(chunks, store, source, prune)
    store_block.persist(store)

    report = {
        "source": source,
        "chunks": len(chunks),
        "written": written,
        "unchanged": len(chunks) - len(todo),
        "removed": removed,
        "seconds": round(time.perf_counter() - started, 2),
    }
    await acreate_table_artifact([report], key=f"{flow_name}-report", description=f"Ingest of {source}")
    logger.info("ingested %s: %s", source, report)
    return report


if __name__ == "__main__":
    asyncio.run(rag_ingest(*sys.argv[1:2]))
