"""The embedded vector store: numpy cosine similarity in this process, saved to one file.

    >>> from prefect_beluga.embeddings import HashingEmbedder
    >>> from prefect_beluga.vectorstores import InMemoryVectorStore
    >>> store = InMemoryVectorStore()
    >>> store.add_documents(chunks, HashingEmbedder())        # doctest: +SKIP
    >>> store.save("index.npz")                               # doctest: +SKIP
    >>> store = InMemoryVectorStore.load("index.npz")         # doctest: +SKIP

Memory: a float32 row per chunk (dimension x 4 bytes: 1.5 KiB at 384) plus the chunk's text and
metadata as Python objects. 100,000 chunks of dimension 384 need 147 MiB of vectors; with
800-character chunks the whole store stays around 400 MB (the test suite measures it).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores.base import Filter, VectorStore, check_filter, check_ids, check_k, matches

_FORMAT = "prefect-beluga.inmemory/1"


class InMemoryVectorStore(VectorStore):
    """Vectors in a float32 numpy matrix (unit rows, so a dot product is the cosine), documents beside them.

    The default store: nothing to run, safe to share between threads. Upserts by id: adding a
    document whose id is already stored replaces it in place. `save(path)` writes one `.npz`
    file atomically (a temporary file renamed over the old one, so a crash never leaves half a
    file); `InMemoryVectorStore.load(path)` reads it back.

    Args:
        dimension: Vector length; set by the first upsert when omitted.

    Examples:
        Build, search and persist the store:

        >>> store = InMemoryVectorStore()
        >>> ids = store.add_documents(chunks, HashingEmbedder())
        >>> docs, scores = store.similarity_search_by_query("What is ML?", 3, embedder)
        >>> store.save("index.npz")

        In another process (or the next flow run):

        >>> store = InMemoryVectorStore.load("index.npz")
    """

    def __init__(self, dimension: int | None = None) -> None:
        if dimension is not None and (not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1):
            raise ValidationError(f"InMemoryVectorStore: dimension must be an int >= 1 or None, got {dimension!r}")
        self.dimension = dimension
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._documents: list[Document] = []
        self._buffer = np.zeros((0, dimension or 0), dtype=np.float32)  # rows [0, len) are in use
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"InMemoryVectorStore(dimension={self.dimension}, documents={len(self)})"

    def __getstate__(self) -> dict:
        with self._lock:
            state = self.__dict__.copy()
            state["_buffer"] = self._buffer[: len(self._ids)].copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def vectors(self) -> np.ndarray:
        """The stored unit vectors, one row per document (a read-only view)."""
        view = self._buffer[: len(self._ids)]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held by the vector matrix (including room reserved for growth)."""
        return int(self._buffer.nbytes)

    # -- the VectorStore primitives -------------------------------------------------------------

    async def aupsert(self, ids: Sequence[str], vectors: Sequence[Sequence[float]], documents: Sequence[Document]) -> None:
        ids = check_ids(ids, where="upsert")
        if not (len(ids) == len(vectors) == len(documents)):
            raise ValidationError(
                f"upsert: {len(ids)} ids, {len(vectors)} vectors and {len(documents)} documents differ in number"
            )
        if not ids:
            return
        documents = [d if d.id == i else d.model_copy(update={"id": i}) for d, i in zip(documents, ids)]
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValidationError("upsert: vectors must be lists of numbers, all of the same length") from None
        if matrix.ndim != 2:
            raise ValidationError("upsert: vectors must be lists of numbers, all of the same length")
        if not np.isfinite(matrix).all():
            row = int(np.argwhere(~np.isfinite(matrix))[0][0])
            raise ValidationError(f"upsert: the vector for id {ids[row]!r} contains NaN or infinity")
        with self._lock:
            self.check_vector(matrix[0], "a vector being added", self.dimension)
            if self.dimension is None:
                self.dimension = int(matrix.shape[1])
                self._buffer = np.zeros((0, self.dimension), dtype=np.float32)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms == 0, 1, norms)  # a copy: the caller's array is left alone
            latest = {id_: row for row, id_ in enumerate(ids)}  # an id twice in one batch: the last wins
            new = [(id_, row) for id_, row in latest.items() if id_ not in self._position]
            for id_, row in latest.items():
                if id_ in self._position:  # upsert: replace in place
                    self._buffer[self._position[id_]] = matrix[row]
                    self._documents[self._position[id_]] = documents[row]
            if new:
                start = len(self._ids)
                self._reserve(start + len(new))
                self._buffer[start : start + len(new)] = matrix[[row for _, row in new]]
                for offset, (id_, row) in enumerate(new):
                    self._position[id_] = start + offset
                    self._ids.append(id_)
                    self._documents.append(documents[row])

    def _reserve(self, rows: int) -> None:
        """Grow the matrix geometrically, so many small upserts cost amortised O(1) copies each."""
        if rows <= self._buffer.shape[0]:
            return
        capacity = max(rows, int(self._buffer.shape[0] * 1.25), 64)
        grown = np.zeros((capacity, self.dimension or 0), dtype=np.float32)
        grown[: len(self._ids)] = self._buffer[: len(self._ids)]
        self._buffer = grown

    async def asimilarity_search_by_vector(
        self, vector: Sequence[float], k: int, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        check_k(k)
        check_filter(filter)
        try:
            query = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValidationError("similarity_search_by_vector: the vector must be a list of numbers") from None
        if query.ndim != 1:
            raise ValidationError("similarity_search_by_vector: the vector must be a flat list of numbers")
        with self._lock:
            count = len(self._ids)
            if count == 0:
                return [], []
            self.check_vector(query, "the query vector")
            norm = float(np.linalg.norm(query))
            scores = self._buffer[:count] @ (query / norm if norm else query)
            documents = self._documents
            if filter:  # best first, checking the filter only until k documents pass it
                top = []
                for i in np.argsort(-scores, kind="stable"):
                    if matches(documents[i].metadata, filter):
                        top.append(int(i))
                        if len(top) == k:
                            break
            elif k < count:
                top = np.argpartition(-scores, k - 1)[:k]
                top = [int(i) for i in top[np.lexsort((top, -scores[top]))]]  # best first; ties by insertion order
            else:
                top = [int(i) for i in np.lexsort((np.arange(count), -scores))]
            return [documents[i] for i in top], [float(scores[i]) for i in top]

    async def adelete(self, ids: Sequence[str]) -> None:
        ids = check_ids(ids, where="delete")
        with self._lock:
            drop = {self._position[i] for i in ids if i in self._position}
            if not drop:
                return
            keep = np.array([p for p in range(len(self._ids)) if p not in drop], dtype=np.int64)
            self._buffer = self._buffer[keep]
            self._ids = [self._ids[p] for p in keep]
            self._documents = [self._documents[p] for p in keep]
            self._position = {id_: p for p, id_ in enumerate(self._ids)}

    async def aget_by_ids(self, ids: Sequence[str]) -> list[Document]:
        ids = check_ids(ids, where="get_by_ids")
        with self._lock:
            return [self._documents[self._position[i]] for i in ids if i in self._position]

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the store to `path` (an `.npz` file), atomically: readers see the old file or the new one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            vectors = self._buffer[: len(self._ids)]
            records = json.dumps(
                {"format": _FORMAT, "dimension": self.dimension, "ids": self._ids,
                 "documents": [{"page_content": d.page_content, "metadata": d.metadata} for d in self._documents]},
                ensure_ascii=False,
            ).encode("utf-8")
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as file:
                    np.savez(file, vectors=vectors, records=np.frombuffer(records, dtype=np.uint8))
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> InMemoryVectorStore:
        """A store read from a file written by `save`."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                vectors = np.ascontiguousarray(data["vectors"], dtype=np.float32)
                records = json.loads(data["records"].tobytes().decode("utf-8"))
            if records.get("format") != _FORMAT:
                raise ValueError(f"unknown format {records.get('format')!r}")
            ids, documents = records["ids"], records["documents"]
            if not (len(ids) == len(documents) == vectors.shape[0]):
                raise ValueError("ids, documents and vectors differ in number")
            store = cls(records["dimension"])
            store._buffer = vectors if vectors.size else np.zeros((0, store.dimension or 0), dtype=np.float32)
            store._ids = [str(i) for i in ids]
            store._documents = [Document(id=i, **d) for i, d in zip(store._ids, documents)]
        except FileNotFoundError:
            raise ValidationError(f"InMemoryVectorStore.load: no file at {path}") from None
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValidationError(f"InMemoryVectorStore.load: {path} is not a saved store ({exc})") from None
        store._position = {id_: p for p, id_ in enumerate(store._ids)}
        return store


__all__ = ["InMemoryVectorStore"]
