"""The VectorStore protocol, deterministic ids and metadata filters."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings.base import Embedder
from prefect_beluga.schema import Document

Filter = Mapping[str, Any]


def document_id(document: Document) -> str:
    """A stable id for a chunk: `document.id` if set, else a hash of its source and chunk
    index (or, without a source, of its content). Re-ingesting the same chunks upserts them
    instead of adding duplicates."""
    if document.id:
        return document.id
    source = document.metadata.get("source")
    if source is not None:
        key = json.dumps([str(source), document.metadata.get("chunk", 0)])
    else:
        key = json.dumps(["content", document.page_content])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def matches(metadata: Mapping[str, Any], filter: Filter | None) -> bool:
    """Whether `metadata` passes `filter`: `{"field": value}` (equal), `{"field": {"$eq": v}}`,
    `{"$ne": v}`, `{"$in": [...]}`, `{"$nin": [...]}`; all conditions must hold."""
    for field, condition in (filter or {}).items():
        value = metadata.get(field)
        if not isinstance(condition, Mapping):
            condition = {"$eq": condition}
        for operator, operand in condition.items():
            if operator == "$eq":
                ok = value == operand
            elif operator == "$ne":
                ok = value != operand
            elif operator == "$in":
                ok = value in operand
            elif operator == "$nin":
                ok = value not in operand
            else:
                raise ValidationError(f"unknown filter operator {operator!r} for field {field!r}; use $eq, $ne, $in or $nin")
            if not ok:
                return False
    return True


def check_k(k: Any) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValidationError(f"k must be an int >= 1, got {k!r}")
    return k


class VectorStore(ABC):
    """Stores documents with their vectors and finds the most similar ones.

    Implement the async methods `aupsert`, `asimilarity_search_by_vector` and `adelete`;
    the document-level and sync methods follow.

    Examples:
        >>> ids = store.add_documents(chunks, embedder)
        >>> docs, scores = store.similarity_search_by_query("What is ML?", 3, embedder)
        >>> docs[0].get_content()
    """

    dimension: int | None = None

    @abstractmethod
    async def aupsert(self, ids: Sequence[str], vectors: Sequence[Sequence[float]], documents: Sequence[Document]) -> None:
        """Insert or replace the vectors and documents under `ids`."""

    @abstractmethod
    async def asimilarity_search_by_vector(
        self, vector: Sequence[float], k: int, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        """The `k` most similar documents to `vector` and their cosine scores, best first."""

    @abstractmethod
    async def adelete(self, ids: Sequence[str]) -> None:
        """Remove the documents under `ids` (unknown ids are ignored)."""

    def check_vector(self, vector: Sequence[float], where: str) -> None:
        if self.dimension is not None and len(vector) != self.dimension:
            raise ValidationError(
                f"{type(self).__name__}: {where} has dimension {len(vector)}, the store holds dimension "
                f"{self.dimension}; use the embedder the store was built with"
            )

    async def aadd_documents(
        self, documents: Sequence[Document], embedder: Embedder, ids: Sequence[str] | None = None
    ) -> list[str]:
        """Embed and upsert `documents`; returns their ids (deterministic: see `document_id`)."""
        documents = list(documents)
        for index, document in enumerate(documents):
            if not isinstance(document, Document):
                raise ValidationError(f"add_documents: item {index} is {type(document).__name__}, expected Document")
        if ids is not None and len(ids) != len(documents):
            raise ValidationError(f"add_documents: {len(ids)} ids for {len(documents)} documents")
        ids = list(ids) if ids is not None else [document_id(d) for d in documents]
        if not documents:
            return []
        vectors = await embedder.aembed_documents([d.page_content for d in documents])
        await self.aupsert(ids, vectors, [d.model_copy(update={"id": i}) for d, i in zip(documents, ids)])
        return ids

    async def asimilarity_search_by_query(
        self, query: str, k: int, embedder: Embedder, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        """The `k` documents most similar to `query` and their scores, best first."""
        if not isinstance(query, str) or not query.strip():
            raise ValidationError(f"similarity_search_by_query: the query must be a non-empty str, got {query!r}")
        check_k(k)
        return await self.asimilarity_search_by_vector(await embedder.aembed_query(query), k, filter=filter)

    def add_documents(self, documents: Sequence[Document], embedder: Embedder, ids: Sequence[str] | None = None) -> list[str]:
        return run_sync(self.aadd_documents(documents, embedder, ids))

    def similarity_search_by_query(
        self, query: str, k: int, embedder: Embedder, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        return run_sync(self.asimilarity_search_by_query(query, k, embedder, filter=filter))

    def similarity_search_by_vector(
        self, vector: Sequence[float], k: int, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        return run_sync(self.asimilarity_search_by_vector(vector, k, filter=filter))

    def delete(self, ids: Sequence[str]) -> None:
        run_sync(self.adelete(ids))
