"""Incremental ingestion helpers: skip unchanged chunks, find stale ones, refuse id clashes."""

from __future__ import annotations

import pytest

from prefect_beluga import rag
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores import InMemoryVectorStore


def chunks(source: str, *texts: str) -> list[Document]:
    return [Document(page_content=t, metadata={"source": source, "chunk": i}) for i, t in enumerate(texts)]


async def test_new_or_changed_skips_what_the_store_already_holds():
    store, embedder = InMemoryVectorStore(), HashingEmbedder()
    first = chunks("a.md", "alpha one", "alpha two") + chunks("b.md", "beta one")
    assert len(await rag.new_or_changed(first, store)) == 3
    await store.aadd_documents(first, embedder)

    assert await rag.new_or_changed(first, store) == []
    edited = chunks("a.md", "alpha one", "alpha two, edited") + chunks("b.md", "beta one", "beta two")
    todo = await rag.new_or_changed(edited, store)
    assert [(d.metadata["source"], d.metadata["chunk"]) for d in todo] == [("a.md", 1), ("b.md", 1)]
    assert all(d.id for d in todo)


async def test_a_metadata_change_counts_as_changed():
    store, embedder = InMemoryVectorStore(), HashingEmbedder()
    await store.aadd_documents(chunks("a.md", "alpha"), embedder)
    retitled = [Document(page_content="alpha", metadata={"source": "a.md", "chunk": 0, "title": "A"})]
    assert len(await rag.new_or_changed(retitled, store)) == 1


async def test_stale_ids_finds_chunks_past_a_shrunken_files_end():
    store, embedder = InMemoryVectorStore(), HashingEmbedder()
    await store.aadd_documents(chunks("a.md", *[f"part {i}" for i in range(5)]) + chunks("b.md", "beta"), embedder)
    shrunk = chunks("a.md", "part 0", "part 1") + chunks("b.md", "beta")
    stale = await rag.stale_ids(shrunk, store)
    stored = {d.metadata["chunk"] for d in await store.aget_by_ids(stale)}
    assert stored == {2, 3, 4}


async def test_stale_ids_probes_beyond_one_batch():
    store, embedder = InMemoryVectorStore(), HashingEmbedder()
    await store.aadd_documents(chunks("a.md", *[f"part {i}" for i in range(12)]), embedder)
    assert len(await rag.stale_ids(chunks("a.md", "part 0"), store, probe=4)) == 11


def test_two_different_chunks_under_one_id_are_refused():
    clash = [Document(id="x", page_content="one"), Document(id="x", page_content="two")]
    with pytest.raises(ValidationError, match="share the id 'x'"):
        rag.ingest.with_ids(clash)


def test_batched():
    assert list(rag.ingest.batched([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValidationError, match="batch size must be an int >= 1, got 0"):
        list(rag.ingest.batched([1], 0))
