"""The embedded vector store: numpy cosine similarity, saved to a file."""

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
from prefect_beluga.vectorstores.base import Filter, VectorStore, check_k, matches


class InMemoryVectorStore(VectorStore):
    """Vectors in a float32 numpy matrix (normalised rows), documents beside them.

    The default store: nothing to run. `save(path)` writes one `.npz` file atomically;
    `InMemoryVectorStore.load(path)` reads it back. 100,000 chunks of dimension 384 take
    about 150 MB of vectors plus their text.

    Args:
        dimension: Vector length; set by the first upsert when omitted.

    Examples:
        >>> store = InMemoryVectorStore()
        >>> store.add_documents(chunks, HashingEmbedder())
        >>> store.save("index.npz")
        >>> store = InMemoryVectorStore.load("index.npz")
    """

    def __init__(self, dimension: int | None = None) -> None:
        self.dimension = dimension
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._documents: list[Document] = []
        self._matrix = np.zeros((0, dimension or 0), dtype=np.float32)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    async def aupsert(self, ids: Sequence[str], vectors: Sequence[Sequence[float]], documents: Sequence[Document]) -> None:
        if not (len(ids) == len(vectors) == len(documents)):
            raise ValidationError(f"upsert: {len(ids)} ids, {len(vectors)} vectors and {len(documents)} documents differ in number")
        if not ids:
            return
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2:
            raise ValidationError("upsert: vectors must all have the same length")
        if self.dimension is None:
            self.dimension = matrix.shape[1]
            self._matrix = np.zeros((0, self.dimension), dtype=np.float32)
        self.check_vector(matrix[0], "a vector being added")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms == 0, 1, norms)
        latest = {id_: row for row, id_ in enumerate(ids)}  # an id twice in one batch: last wins
        with self._lock:
            new_rows = []
            for id_, row in latest.items():
                if id_ in self._position:  # upsert: replace in place
                    self._matrix[self._position[id_]] = matrix[row]
                    self._documents[self._position[id_]] = documents[row]
                else:
                    self._position[id_] = len(self._ids)
                    self._ids.append(id_)
                    self._documents.append(documents[row])
                    new_rows.append(row)
            if new_rows:
                self._matrix = np.vstack([self._matrix, matrix[new_rows]])

    async def asimilarity_search_by_vector(
        self, vector: Sequence[float], k: int, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        check_k(k)
        if not self._ids:
            return [], []
        query = np.asarray(vector, dtype=np.float32)
        self.check_vector(query, "the query vector")
        norm = float(np.linalg.norm(query))
        scores = self._matrix @ (query / norm if norm else query)
        if filter:
            allowed = np.array([matches(d.metadata, filter) for d in self._documents])
            scores = np.where(allowed, scores, -np.inf)
        top = np.argsort(-scores, kind="stable")[:k]
        top = [i for i in top if np.isfinite(scores[i])]
        return [self._documents[i] for i in top], [float(scores[i]) for i in top]

    async def adelete(self, ids: Sequence[str]) -> None:
        with self._lock:
            drop = {self._position[i] for i in ids if i in self._position}
            if not drop:
                return
            keep = [p for p in range(len(self._ids)) if p not in drop]
            self._matrix = self._matrix[keep]
            self._ids = [self._ids[p] for p in keep]
            self._documents = [self._documents[p] for p in keep]
            self._position = {id_: p for p, id_ in enumerate(self._ids)}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the store to `path` (`.npz`), atomically: a crash never leaves half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        documents = json.dumps([d.model_dump() for d in self._documents], ensure_ascii=False)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(handle, "wb") as file:
            np.savez(file, vectors=self._matrix, ids=np.array(self._ids, dtype=str), documents=np.array(documents),
                     dimension=np.array(self.dimension or 0))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> InMemoryVectorStore:
        """A store read from a file written by `save`."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                store = cls(int(data["dimension"]) or None)
                store._matrix = data["vectors"].astype(np.float32)
                store._ids = [str(i) for i in data["ids"]]
                store._documents = [Document(**d) for d in json.loads(str(data["documents"]))]
        except (OSError, KeyError, ValueError) as exc:
            raise ValidationError(f"InMemoryVectorStore.load: {path} is not a saved store ({exc})") from None
        store._position = {id_: p for p, id_ in enumerate(store._ids)}
        return store
