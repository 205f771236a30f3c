"""The embedded vector store: numpy cosine similarity in this process, saved to one file.

    ```python
    from prefect_beluga.embeddings import HashingEmbedder
    from prefect_beluga.schema import Document
    from prefect_beluga.vectorstores import InMemoryVectorStore

    chunks = [Document(page_content="Prefect runs flows."), Document(page_content="Flows are made of tasks.")]
    store = InMemoryVectorStore()
    store.add_documents(chunks, HashingEmbedder())
    store.save("index.npz")
    store = InMemoryVectorStore.load("index.npz")
    store.save_changes("index.npz")  # merge, under a lock, with what others saved meanwhile
    ```

Several processes may share one file: `save_changes` writes only what this store changed since
it was loaded (or last saved), over whatever the file holds by then, so two flow runs ingesting
at once both keep their documents.

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
from filelock import FileLock

from prefect_beluga.core._checks import check_int
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores.base import Filter, VectorStore, check_filter, check_ids, check_k, matches

_FORMAT = "prefect-beluga.inmemory/1"


class InMemoryVectorStore(VectorStore):
    """Vectors in a float32 numpy matrix (unit rows, so a dot product is the cosine), documents beside them.

    The default store: nothing to run, safe to share between threads. Upserts by id: adding a
    document whose id is already stored replaces it in place. `save(path)` writes one `.npz`
    file atomically (a temporary file renamed over the old one, so a crash never leaves half a
    file); `InMemoryVectorStore.load(path)` reads it back. When others may write the file too,
    `save_changes(path)` merges this store's upserts and deletes into it instead.

    Args:
        dimension: Vector length; set by the first upsert when omitted.

    Examples:
        Build, search and persist the store:

        ```python
        from prefect_beluga.embeddings import HashingEmbedder
        from prefect_beluga.schema import Document
        from prefect_beluga.vectorstores import InMemoryVectorStore

        chunks = [Document(page_content="ML learns from data."), Document(page_content="Prefect runs flows.")]
        store, embedder = InMemoryVectorStore(), HashingEmbedder()
        ids = store.add_documents(chunks, embedder)
        docs, scores = store.similarity_search_by_query("What is ML?", 3, embedder)
        docs[0].page_content  # -> 'ML learns from data.'
        store.save("index.npz")
        ```

        In another process (or the next flow run):

        ```python
        store = InMemoryVectorStore.load("index.npz")
        ```
    """

    def __init__(self, dimension: int | None = None) -> None:
        check_int(dimension, "InMemoryVectorStore: dimension", low=1, none=True)
        self.dimension = dimension
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._documents: list[Document] = []
        self._buffer = np.zeros((0, dimension or 0), dtype=np.float32)  # rows [0, len) are in use
        self._lock = threading.RLock()
        # Since the last load or save: id -> True (upserted) or False (deleted), for save_changes.
        self._changes: dict[str, bool] = {}
        self._stamp: tuple[int, ...] | None = None  # the file as last loaded or saved

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

    async def aupsert(
        self, ids: Sequence[str], vectors: Sequence[Sequence[float]], documents: Sequence[Document]
    ) -> None:
        ids = check_ids(ids, where="upsert")
        if not (len(ids) == len(vectors) == len(documents)):
            raise ValidationError(
                f"upsert: {len(ids)} ids, {len(vectors)} vectors and {len(documents)} documents differ in number"
            )
        if not ids:
            return
        documents = [d if d.id == i else d.model_copy(update={"id": i}) for d, i in zip(documents, ids, strict=True)]
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValidationError("upsert: vectors must be lists of numbers, all of the same length") from None
        if matrix.ndim != 2:
            raise ValidationError("upsert: vectors must be lists of numbers, all of the same length")
        if not np.isfinite(matrix).all():
            row = int(np.argwhere(~np.isfinite(matrix))[0][0])
            raise ValidationError(f"upsert: the vector for id {ids[row]!r} contains NaN or infinity")
        self._write(ids, matrix, documents)

    def _write(self, ids: Sequence[str], matrix: np.ndarray, documents: Sequence[Document]) -> None:
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
            self._changes.update(dict.fromkeys(latest, True))

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
        self._remove(check_ids(ids, where="delete"))

    def _remove(self, ids: Sequence[str]) -> None:
        with self._lock:
            self._changes.update(dict.fromkeys(ids, False))
            drop = {self._position[i] for i in ids if i in self._position}
            if not drop:
                return
            keep = np.array([p for p in range(len(self._ids)) if p not in drop], dtype=np.int64)
            self._buffer = self._buffer[keep]
            self._ids = [self._ids[p] for p in keep]
            self._documents = [self._documents[p] for p in keep]
            self._position = {id_: p for p, id_ in enumerate(self._ids)}

    async def alist_ids(self, prefix: str = "") -> list[str]:
        if not isinstance(prefix, str):
            raise ValidationError(f"list_ids: prefix must be a str, got {type(prefix).__name__}")
        with self._lock:
            return sorted(i for i in self._ids if i.startswith(prefix))

    async def aget_by_ids(self, ids: Sequence[str]) -> list[Document]:
        ids = check_ids(ids, where="get_by_ids")
        with self._lock:
            return [self._documents[self._position[i]] for i in ids if i in self._position]

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the store to `path` (an `.npz` file), atomically: readers see the old file or the new one.

        The file becomes exactly this store: what another process saved there meanwhile is
        replaced. Use `save_changes` when others may write the same file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            vectors = self._buffer[: len(self._ids)]
            records = json.dumps(
                {
                    "format": _FORMAT,
                    "dimension": self.dimension,
                    "ids": self._ids,
                    "documents": [{"page_content": d.page_content, "metadata": d.metadata} for d in self._documents],
                },
                ensure_ascii=False,
            ).encode("utf-8")
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as file:
                    np.savez(file, vectors=vectors, records=np.frombuffer(records, dtype=np.uint8))
                    file.flush()
                    os.fsync(file.fileno())
                    stamp = _stamp(os.fstat(file.fileno()))
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            self._changes.clear()
            self._stamp = stamp

    def save_changes(self, path: str | os.PathLike[str]) -> None:
        """Merge what this store changed since it was loaded (or last saved) into the file at `path`.

        Under a lock on the file (`.NAME.lock` beside it, for processes on this machine): when the
        file is no longer the one this store last loaded or saved, it is read again, this
        store's upserts and deletes are applied to it, and the result is saved atomically and
        becomes this store's contents. Two flow runs writing one file at once both keep their
        documents; an id both wrote holds the last writer's version. When nobody else wrote the
        file, this is `save(path)`.

        Raises:
            ValidationError: the file is not a saved store, or holds vectors of another dimension.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(f".{path.name}.lock")), self._lock:
            try:
                current = _stamp(os.stat(path))
            except FileNotFoundError:
                current = None
            if current is None or current == self._stamp:
                self.save(path)
                return
            merged = type(self).load(path)
            merged._remove([id_ for id_, upserted in self._changes.items() if not upserted])
            rows = [self._position[id_] for id_, upserted in self._changes.items() if upserted]
            if rows:
                merged._write([self._ids[r] for r in rows], self._buffer[rows], [self._documents[r] for r in rows])
            merged.save(path)
            del merged.__dict__["_lock"]
            self.__dict__.update(merged.__dict__)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> InMemoryVectorStore:
        """A store read from a file written by `save`."""
        try:
            # Stamped through the open file: a save replacing it meanwhile makes a new file.
            with open(path, "rb") as file, np.load(file, allow_pickle=False) as data:
                stamp = _stamp(os.fstat(file.fileno()))
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
            store._documents = [Document(id=i, **d) for i, d in zip(store._ids, documents, strict=True)]
        except FileNotFoundError:
            raise ValidationError(f"InMemoryVectorStore.load: no file at {path}") from None
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValidationError(f"InMemoryVectorStore.load: {path} is not a saved store ({exc})") from None
        store._position = {id_: p for p, id_ in enumerate(store._ids)}
        store._stamp = stamp
        return store


def _stamp(stat: os.stat_result) -> tuple[int, ...]:
    """Which file this is: `save` always writes a new file and renames it into place."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


__all__ = ["InMemoryVectorStore"]
