"""Incremental ingestion: only chunks the store does not already hold are embedded and written.

Chunk ids are deterministic (`document_id`: source + chunk index), so writing a chunk twice
replaces it instead of duplicating it. On top of that, `new_or_changed` asks the store which
chunks it already holds with the same text and metadata, so a re-run — after new files arrive,
or after a run was killed midway — embeds only what is missing.

Examples:
    >>> chunks = TokenTextSplitter(400, 50).split_documents(load_documents("docs/"))
    >>> todo = await new_or_changed(chunks, store)
    >>> for batch in batched(todo, 64):
    ...     await store.aadd_documents(batch, embedder)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores.base import VectorStore, document_id

T = TypeVar("T")

# Ids asked of the store per request (Pinecone's fetch takes at most 1,000).
_LOOKUP_BATCH = 1000


def with_ids(chunks: Sequence[Document]) -> list[Document]:
    """The chunks with their deterministic ids set, refusing two different chunks under one id."""
    seen: dict[str, Document] = {}
    for chunk in chunks:
        chunk = chunk if chunk.id else chunk.model_copy(update={"id": document_id(chunk)})
        earlier = seen.get(chunk.id)
        if earlier is not None and earlier.page_content != chunk.page_content:
            raise ValidationError(
                f"two different chunks share the id {chunk.id!r} (source {chunk.metadata.get('source')!r}, "
                f"chunk {chunk.metadata.get('chunk')!r}): give each chunk a distinct source/chunk"
            )
        seen[chunk.id] = chunk
    return list(seen.values())


def _unchanged(stored: Document, chunk: Document) -> bool:
    if stored.page_content != chunk.page_content:
        return False
    # Remote stores may widen numbers (1 -> 1.0); == treats those as equal.
    return all(stored.metadata.get(key) == value for key, value in chunk.metadata.items())


async def new_or_changed(chunks: Sequence[Document], store: VectorStore) -> list[Document]:
    """The chunks (with ids set) that `store` does not already hold with the same text and metadata."""
    chunks = with_ids(chunks)
    stored: dict[str, Document] = {}
    for batch in batched(chunks, _LOOKUP_BATCH):
        for document in await store.aget_by_ids([c.id for c in batch]):
            stored[document.id] = document
    return [c for c in chunks if c.id not in stored or not _unchanged(stored[c.id], c)]


async def stale_ids(chunks: Sequence[Document], store: VectorStore, *, probe: int = 100) -> list[str]:
    """Ids of chunks the store holds beyond each source's current last chunk.

    When a file shrinks, its chunks past the new end would otherwise linger in the store and
    keep being retrieved. Their ids are computable (source + index), so the store is asked for
    indices after each source's last one, `probe` at a time, until a batch comes back short.
    """
    last: dict[str, int] = {}
    for chunk in chunks:
        source, index = chunk.metadata.get("source"), chunk.metadata.get("chunk")
        if source is not None and isinstance(index, int) and not chunk.id:
            last[str(source)] = max(last.get(str(source), -1), index)
    stale: list[str] = []
    for source, end in last.items():
        start = end + 1
        while True:
            ids = [document_id(Document(page_content="", metadata={"source": source, "chunk": i}))
                   for i in range(start, start + probe)]
            found = {d.id for d in await store.aget_by_ids(ids)}
            stale += [i for i in ids if i in found]
            if len(found) < probe:
                break
            start += probe
    return stale


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive lists of at most `size`."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValidationError(f"batch size must be an int >= 1, got {size!r}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


__all__ = ["batched", "new_or_changed", "stale_ids", "with_ids"]
