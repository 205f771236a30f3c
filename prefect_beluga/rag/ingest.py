"""Incremental ingestion that mirrors its source: only missing chunks are written, gone ones removed.

Chunk ids are deterministic (`chunk_id`: the source's path key + `#` + chunk index), so writing a
chunk twice replaces it instead of duplicating it. The path key hashes each folder name of the
file's resolved path separately (`3f2a9c1b/77d0e4aa/…/5be1c2d0#4`), so every chunk under a folder
shares that folder's id prefix: `removed_ids` lists the prefix (`VectorStore.alist_ids`,
Pinecone's list-by-prefix) to find the chunks of files that were deleted or shrank. On top of
that, `new_or_changed` asks the store which chunks it already holds with the same text and
metadata, so a re-run — after new files arrive, or after a run was killed midway — embeds only
what is missing.

Examples:
    ```python
    from pathlib import Path

    from prefect_beluga.embeddings import HashingEmbedder
    from prefect_beluga.rag import TokenTextSplitter, load_documents, new_or_changed
    from prefect_beluga.rag.ingest import batched
    from prefect_beluga.vectorstores import InMemoryVectorStore

    Path("docs").mkdir(exist_ok=True)
    Path("docs/intro.md").write_text("Prefect runs flows. A flow is made of tasks.")
    store, embedder = InMemoryVectorStore(), HashingEmbedder()

    chunks = TokenTextSplitter(400, 50).split_documents(load_documents("docs/"))
    todo = await new_or_changed(chunks, store)
    for batch in batched(todo, 64):
        await store.aadd_documents(batch, embedder)
    await new_or_changed(chunks, store)  # -> []: a re-run embeds nothing
    ```
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from typing import TypeVar

from prefect_beluga.core._checks import check_int
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.rag.loaders import SourceScope
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores.base import VectorStore, document_id

T = TypeVar("T")

# Ids asked of the store per request (Pinecone's fetch takes at most 1,000).
_LOOKUP_BATCH = 1000


def path_key(path: str) -> str:
    """An ASCII id prefix for an absolute path that keeps its folder structure: one short hash per name.

    Pinecone ids must be ASCII and at most 512 characters; hashing each name (8 hex digits)
    keeps any path's key ASCII and short while a folder's key stays a prefix of its files' keys.
    """
    return "/".join(hashlib.sha256(part.encode("utf-8")).hexdigest()[:8] for part in PurePosixPath(path).parts[1:])


def chunk_id(source: str, chunk: int) -> str:
    """The id of chunk `chunk` of the file `source` (a resolved absolute path): `path_key#chunk`."""
    return f"{path_key(source)}#{chunk}"


def scope_prefix(scope: SourceScope) -> str:
    """The id prefix every chunk in `scope` starts with."""
    if scope.kind == "file":
        return path_key(scope.target) + "#"
    key = path_key(scope.root)
    return key + "/" if key else ""


def _id_of(chunk: Document) -> str:
    source, index = chunk.metadata.get("source"), chunk.metadata.get("chunk")
    if isinstance(source, str) and source.startswith("/") and isinstance(index, int):
        return chunk_id(source, index)
    return document_id(chunk)


def with_ids(chunks: Sequence[Document]) -> list[Document]:
    """The chunks with their deterministic ids set, refusing two different chunks under one id.

    A chunk of a loaded file (absolute `source` and a `chunk` index) gets `chunk_id`; any other
    chunk `document_id`.
    """
    seen: dict[str, Document] = {}
    for chunk in chunks:
        chunk = chunk if chunk.id else chunk.model_copy(update={"id": _id_of(chunk)})
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
            ids = [
                _id_of(Document(page_content="", metadata={"source": source, "chunk": i}))
                for i in range(start, start + probe)
            ]
            found = {d.id for d in await store.aget_by_ids(ids)}
            stale += [i for i in ids if i in found]
            if len(found) < probe:
                break
            start += probe
    return stale


async def removed_ids(chunks: Sequence[Document], store: VectorStore, scope: SourceScope) -> list[str]:
    """Ids the store holds in `scope` that `chunks` no longer have: files deleted, emptied or shrunk.

    The store lists the ids under the scope's prefix (`alist_ids`); those not among the current
    chunks are fetched, and only those whose `source` lies in `scope` (the folder's text files,
    what the glob matches, or the file) are returned — a file ingested from elsewhere, or of a
    suffix the folder ingest skips, is never touched. Reads only: safe to repeat after a crash.
    """
    current = {c.id for c in with_ids(chunks)}
    candidates = [i for i in await store.alist_ids(scope_prefix(scope)) if i not in current]
    removed: list[str] = []
    for batch in batched(candidates, _LOOKUP_BATCH):
        for document in await store.aget_by_ids(batch):
            source = document.metadata.get("source")
            if isinstance(source, str) and scope.contains(source):
                removed.append(document.id)
    return removed


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive lists of at most `size`."""
    check_int(size, "batch size", low=1)
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


__all__ = ["batched", "chunk_id", "new_or_changed", "path_key", "removed_ids", "scope_prefix", "stale_ids", "with_ids"]
