"""The VectorStore base class, deterministic ids and the metadata filter language.

    ```python
    from prefect_beluga.embeddings import HashingEmbedder
    from prefect_beluga.schema import Document
    from prefect_beluga.vectorstores import InMemoryVectorStore
    store, embedder = InMemoryVectorStore(), HashingEmbedder()
    ids = store.add_documents([
        Document(
            page_content="Machine learning learns patterns from data.", metadata={"source": "ml.md", "chunk": 0}
        ),
        Document(page_content="Prefect runs flows made of tasks.", metadata={"source": "prefect.md", "chunk": 0}),
    ], embedder)
    docs, scores = store.similarity_search_by_query("What is machine learning?", 1, embedder)
    docs[0].metadata["source"]  # -> 'ml.md'
    ```

Filters use Pinecone's metadata filter language, so a filter means the same on every store:

    {"genre": "drama"}                               equality (short for {"$eq": "drama"})
    {"year": {"$gte": 2020, "$lt": 2024}}            $eq $ne $gt $gte $lt $lte: all must hold
    {"source": {"$in": ["a.md", "b.md"]}}            $in / $nin: one of / none of a list
    {"title": {"$exists": True}}                     whether the field is present
    {"$or": [{"genre": "drama"}, {"year": 2021}]}    $and / $or over a list of filters

Several fields in one filter must all hold. A list-valued field (e.g. tags) matches `$eq`/`$in`
when any of its items does, as in Pinecone. An unknown operator is a `ValidationError`.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from prefect_beluga.core._checks import check_int, is_int
from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings.base import Embedder
from prefect_beluga.schema import Document

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

Filter = Mapping[str, Any]

DEFAULT_SLAB_SIZE = 1000
"""About how many documents `add_documents` embeds while the slab before them is upserted."""

_COMPARISONS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"})
_MISSING = object()


def document_id(document: Document) -> str:
    """A stable id for a chunk, so re-ingesting the same chunks upserts instead of duplicating.

    `document.id` when set; else a hash of `metadata["source"]` and `metadata["chunk"]` (the
    chunk index the splitter adds); else, with a source but no chunk index, of the source and
    the content; else of the content alone.
    """
    if document.id:
        return document.id
    metadata = document.metadata
    source = metadata.get("source")
    if source is not None and metadata.get("chunk") is not None:
        key = ["chunk", str(source), str(metadata["chunk"])]
    elif source is not None:
        key = ["source+content", str(source), document.page_content]
    else:
        key = ["content", document.page_content]
    return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


def check_filter(filter: Filter | None, *, where: str = "filter") -> dict[str, Any] | None:
    """`filter` as a plain dict once its shape is valid; a `ValidationError` naming the problem."""
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        raise ValidationError(f"{where} must be a dict such as {{'source': 'a.md'}}, got {type(filter).__name__}")
    for field, condition in filter.items():
        if field in ("$and", "$or"):
            if not isinstance(condition, Sequence) or isinstance(condition, str) or not condition:
                raise ValidationError(f"{where}: {field} takes a non-empty list of filters, got {condition!r}")
            for index, part in enumerate(condition):
                check_filter(part, where=f"{where}[{field}][{index}]")
            continue
        if not isinstance(field, str) or not field or field.startswith("$"):
            raise ValidationError(
                f"{where}: unknown filter operator {field!r} at the top level; use a field name, $and or $or"
            )
        if not isinstance(condition, Mapping):
            _check_operand(field, "$eq", condition, where)
            continue
        if not condition:
            raise ValidationError(f"{where}: the condition for field {field!r} is empty")
        for operator, operand in condition.items():
            if operator not in _COMPARISONS:
                raise ValidationError(
                    f"{where}: unknown filter operator {operator!r} for field {field!r}; "
                    f"use one of {', '.join(sorted(_COMPARISONS))}"
                )
            _check_operand(field, operator, operand, where)
    return dict(filter)


def _check_operand(field: str, operator: str, operand: Any, where: str) -> None:
    if operator in ("$in", "$nin"):
        if isinstance(operand, (str, bytes)) or not isinstance(operand, Sequence):
            raise ValidationError(f"{where}: {operator} for field {field!r} takes a list, got {operand!r}")
    elif operator == "$exists":
        if not isinstance(operand, bool):
            raise ValidationError(f"{where}: $exists for field {field!r} takes True or False, got {operand!r}")
    elif operator in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(operand, bool) or not isinstance(operand, numbers.Real):
            raise ValidationError(f"{where}: {operator} for field {field!r} takes a number, got {operand!r}")
    elif isinstance(operand, (Mapping, list, tuple)):
        raise ValidationError(f"{where}: {operator} for field {field!r} takes a single value, got {operand!r}")


def matches(metadata: Mapping[str, Any], filter: Filter | None) -> bool:
    """Whether `metadata` passes `filter` (the language in the module docstring)."""
    for field, condition in (filter or {}).items():
        if field == "$and":
            if not all(matches(metadata, part) for part in condition):
                return False
            continue
        if field == "$or":
            if not any(matches(metadata, part) for part in condition):
                return False
            continue
        value = metadata.get(field, _MISSING)
        if not isinstance(condition, Mapping):
            condition = {"$eq": condition}
        for operator, operand in condition.items():
            if not _compare(value, operator, operand, field):
                return False
    return True


def _compare(value: Any, operator: str, operand: Any, field: str) -> bool:
    values = value if isinstance(value, list) else [value]  # a list field matches through any item
    if operator == "$exists":
        return (value is not _MISSING) == operand
    if operator == "$eq":
        return any(_same(v, operand) for v in values)
    if operator == "$ne":
        return value is _MISSING or not any(_same(v, operand) for v in values)
    if operator == "$in":
        return any(_same(v, o) for v in values for o in operand)
    if operator == "$nin":
        return value is _MISSING or not any(_same(v, o) for v in values for o in operand)
    if operator in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        return {"$gt": value > operand, "$gte": value >= operand, "$lt": value < operand, "$lte": value <= operand}[
            operator
        ]
    raise ValidationError(f"unknown filter operator {operator!r} for field {field!r}")


def _same(value: Any, operand: Any) -> bool:
    # True == 1 in Python, not in a JSON filter: keep booleans apart from numbers.
    return value == operand and isinstance(value, bool) == isinstance(operand, bool)


def check_k(k: Any) -> int:
    """`k` if it is a positive int, else a `ValidationError`."""
    return check_int(k, "k", low=1)


def check_ids(ids: Any, *, where: str) -> list[str]:
    """`ids` as a list of non-empty strings, else a `ValidationError` naming the bad item."""
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise ValidationError(f"{where}: ids must be a list of str, got {type(ids).__name__}")
    for index, id_ in enumerate(ids):
        if not isinstance(id_, str) or not id_:
            raise ValidationError(f"{where}: id {index} is {id_!r}, expected a non-empty str")
    return list(ids)


def check_slab_size(slab_size: Any, embedder: Any = None) -> int:
    """The slab size `add_documents` uses: `slab_size` if it is an int >= 1, else a `ValidationError`.

    `None` means about `DEFAULT_SLAB_SIZE` documents, rounded to a whole number (at least one)
    of the embedder's rounds when it has a `batch_size` and a `max_concurrency`: a slab of
    `k * batch_size * max_concurrency` texts keeps every request slot busy to its last round.
    """
    if slab_size is not None:
        return check_int(slab_size, "add_documents: slab_size", low=1, none=True)
    batch, concurrency = getattr(embedder, "batch_size", None), getattr(embedder, "max_concurrency", None)
    if not all(is_int(n) and n >= 1 for n in (batch, concurrency)):
        return DEFAULT_SLAB_SIZE
    round_size = batch * concurrency
    return max(1, round(DEFAULT_SLAB_SIZE / round_size)) * round_size


class VectorStore(ABC):
    """Stores documents with their vectors and finds the ones most similar to a query.

    Subclasses implement the async primitives `aupsert`, `asimilarity_search_by_vector`,
    `adelete` and `aget_by_ids`; the document-level methods and the sync twins (thin wrappers
    that run the async method) follow. Scores are cosine similarities, best first. A store
    knows nothing of Prefect: a chain or graph step that uses it becomes the Prefect task.

    Examples:
        ```python
        from prefect_beluga.embeddings import HashingEmbedder
        from prefect_beluga.schema import Document
        from prefect_beluga.vectorstores import InMemoryVectorStore

        store, embedder = InMemoryVectorStore(), HashingEmbedder()
        chunks = [Document(page_content="ML learns from data.", metadata={"source": "ml.md"})]
        ids = store.add_documents(chunks, embedder)          # upsert: same chunks, same ids
        docs, scores = store.similarity_search_by_query("What is ML?", 3, embedder)
        docs[0].get_content(), docs[0].metadata, docs[0].id
        store.similarity_search_by_query("What is ML?", 3, embedder, filter={"source": "ml.md"})
        store.delete(ids[:1])
        ```
    """

    dimension: int | None = None

    # -- what a store implements --------------------------------------------------------------

    @abstractmethod
    async def aupsert(
        self, ids: Sequence[str], vectors: Sequence[Sequence[float]], documents: Sequence[Document]
    ) -> None:
        """Insert or replace the vectors and documents under `ids`."""

    @abstractmethod
    async def asimilarity_search_by_vector(
        self, vector: Sequence[float], k: int, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        """The `k` documents most similar to `vector` (passing `filter`) and their cosine scores, best first."""

    @abstractmethod
    async def adelete(self, ids: Sequence[str]) -> None:
        """Remove the documents under `ids` (unknown ids are ignored)."""

    @abstractmethod
    async def aget_by_ids(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents under `ids`, in that order; unknown ids are left out."""

    async def adimension(self) -> int | None:
        """The vector length the store holds, if known (a remote store may ask its server)."""
        return self.dimension

    async def alist_ids(self, prefix: str = "") -> list[str]:
        """Every stored id that starts with `prefix` (Pinecone's list-by-prefix), sorted.

        Ingest uses it to find the chunks of files that are gone. A store that cannot list its
        ids raises `NotImplementedError`; ingest then needs `prune=False`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot list its ids by prefix, so ingest cannot find the chunks of "
            "deleted files: implement alist_ids or ingest with prune=False"
        )

    def list_ids(self, prefix: str = "") -> list[str]:
        """Sync `alist_ids`."""
        return run_sync(self.alist_ids(prefix))

    # -- checks shared by every store ---------------------------------------------------------

    def check_vector(self, vector: Sequence[float], where: str, dimension: int | None = None) -> None:
        """A `ValidationError` if `vector`'s length is not the store's dimension."""
        dimension = self.dimension if dimension is None else dimension
        if dimension is not None and len(vector) != dimension:
            raise ValidationError(
                f"{type(self).__name__}: {where} has dimension {len(vector)}, the store holds dimension "
                f"{dimension}; use the embedder the store was built with"
            )

    async def _check_embedder(self, embedder: Embedder, where: str) -> None:
        if not isinstance(embedder, Embedder):
            raise ValidationError(f"{where}: embedder must be an Embedder, got {type(embedder).__name__}")
        have = getattr(embedder, "dimension", None)
        want = await self.adimension()
        if isinstance(have, int) and want is not None and have != want:
            raise ValidationError(
                f"{where}: the embedder {type(embedder).__name__} has dimension {have}, the store holds "
                f"dimension {want}; use the embedder the store was built with"
            )

    # -- the document-level API ---------------------------------------------------------------

    async def aadd_documents(
        self,
        documents: Sequence[Document],
        embedder: Embedder,
        ids: Sequence[str] | None = None,
        *,
        slab_size: int | None = None,
    ) -> list[str]:
        """Embed and upsert `documents`; returns their ids.

        Ids are `ids` when given, else deterministic (`document_id`): adding the same chunks
        again replaces them instead of duplicating them, so retrying a failed call is safe.

        Documents go through in slabs of `slab_size` (default: see `check_slab_size`, about
        1,000): slab i + 1 is embedded while slab i is upserted, one upsert at a time, so the
        wall time nears the slower stage's plus one slab of the faster one, and at most two
        slabs of vectors are held at once. A failure in either stage cancels the other and is
        raised as it was; slabs upserted before it stay stored.
        """
        if isinstance(documents, (str, Document)) or not isinstance(documents, Sequence):
            raise ValidationError(f"add_documents: expected a list of Document, got {type(documents).__name__}")
        documents = list(documents)
        for index, document in enumerate(documents):
            if not isinstance(document, Document):
                raise ValidationError(f"add_documents: item {index} is {type(document).__name__}, expected Document")
        if ids is not None:
            ids = check_ids(ids, where="add_documents")
            if len(ids) != len(documents):
                raise ValidationError(f"add_documents: {len(ids)} ids for {len(documents)} documents")
        ids = list(ids) if ids is not None else [document_id(d) for d in documents]
        slab_size = check_slab_size(slab_size, embedder)
        if not documents:
            return []
        await self._check_embedder(embedder, "add_documents")
        # Unbuffered: slab i + 1 is handed over only once the upsert of slab i is done.
        send, receive = anyio.create_memory_object_stream(0)

        async def upsert_slabs() -> None:
            async for start, vectors in receive:
                slab = slice(start, start + len(vectors))
                documents_with_ids = [
                    d.model_copy(update={"id": i}) for d, i in zip(documents[slab], ids[slab], strict=True)
                ]
                await self.aupsert(ids[slab], vectors, documents_with_ids)

        try:
            with receive:  # closed only after both stages: a failed upsert just cancels the embedding
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(upsert_slabs)
                    with send:
                        for start in range(0, len(documents), slab_size):
                            texts = [d.page_content for d in documents[start : start + slab_size]]
                            vectors = await embedder.aembed_documents(texts)
                            if len(vectors) != len(texts):
                                raise ValidationError(
                                    f"add_documents: the embedder returned {len(vectors)} vectors for "
                                    f"{len(texts)} documents (documents {start} to {start + len(texts) - 1})"
                                )
                            await send.send((start, vectors))
        except BaseExceptionGroup as group:  # anyio wraps even a single failure: raise it as it was
            raise group.exceptions[0] from None
        return ids

    async def asimilarity_search_by_query(
        self, query: str, k: int, embedder: Embedder, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        """The `k` documents most similar to `query` (passing `filter`) and their scores, best first."""
        if not isinstance(query, str) or not query.strip():
            raise ValidationError(f"similarity_search_by_query: the query must be a non-empty str, got {query!r}")
        check_k(k)
        check_filter(filter)
        await self._check_embedder(embedder, "similarity_search_by_query")
        return await self.asimilarity_search_by_vector(await embedder.aembed_query(query), k, filter=filter)

    # -- sync twins ---------------------------------------------------------------------------

    def add_documents(
        self,
        documents: Sequence[Document],
        embedder: Embedder,
        ids: Sequence[str] | None = None,
        *,
        slab_size: int | None = None,
    ) -> list[str]:
        """Sync `aadd_documents`."""
        return run_sync(self.aadd_documents(documents, embedder, ids, slab_size=slab_size))

    def similarity_search_by_query(
        self, query: str, k: int, embedder: Embedder, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        """Sync `asimilarity_search_by_query`."""
        return run_sync(self.asimilarity_search_by_query(query, k, embedder, filter=filter))

    def similarity_search_by_vector(
        self, vector: Sequence[float], k: int, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        """Sync `asimilarity_search_by_vector`."""
        return run_sync(self.asimilarity_search_by_vector(vector, k, filter=filter))

    def delete(self, ids: Sequence[str]) -> None:
        """Sync `adelete`."""
        run_sync(self.adelete(ids))

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        """Sync `aget_by_ids`."""
        return run_sync(self.aget_by_ids(ids))


__all__ = [
    "DEFAULT_SLAB_SIZE",
    "Filter",
    "VectorStore",
    "check_filter",
    "check_ids",
    "check_k",
    "check_slab_size",
    "document_id",
    "matches",
]
