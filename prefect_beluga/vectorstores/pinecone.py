"""A vector store on a Pinecone index, through the official `pinecone` SDK.

    ```python
    # example: not run (needs a Pinecone index and its key, and a real OPENAI_API_KEY)
    from pydantic import SecretStr

    from prefect_beluga.embeddings import OpenAIEmbedder
    from prefect_beluga.vectorstores import PineconeVectorStore

    store = PineconeVectorStore("docs-index", api_key=SecretStr("..."), namespace="handbook")
    store.add_documents(chunks, OpenAIEmbedder())  # chunks: Documents, e.g. from rag.TokenTextSplitter
    docs, scores = store.similarity_search_by_query("What is ML?", 3, OpenAIEmbedder())
    ```

The index must exist, created with a `dimension` equal to the embedder's and the `cosine` metric.
Each chunk becomes one vector: its id is deterministic (`document_id`: source + chunk index), so
ingesting the same files again overwrites their vectors instead of adding copies; its metadata is
the document's metadata plus the text itself under `text_key` ("text" by default, as LangChain's
Pinecone store does), which is how a search hands back whole documents.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import numbers
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import SecretStr

from prefect_beluga.core._checks import check_int, check_number
from prefect_beluga.core.errors import ValidationError, add_step_note
from prefect_beluga.core.secrets import scrub
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores._pinecone_sdk import describe, set_sdk_retries, values_of
from prefect_beluga.vectorstores.base import Filter, VectorStore, check_filter, check_ids, check_k

logger = logging.getLogger(__name__)

# Pinecone's documented data-plane limits.
MAX_BATCH_SIZE = 1000  # vectors per upsert request
MAX_REQUEST_BYTES = 2 * 1024 * 1024  # per upsert request
MAX_METADATA_BYTES = 40 * 1024  # per vector
MAX_TOP_K = 10_000
MAX_ID_LENGTH = 512
_FETCH_BATCH = 100  # ids per fetch (they travel in the URL)
_DELETE_BATCH = 1000  # ids per delete request
_LIST_PAGE = 100  # ids per list page (Pinecone's most)
_REQUEST_HEADROOM = 64 * 1024  # bytes kept free under the request limit for JSON framing
_BYTES_PER_VALUE = 26  # upper bound for one float in the SDK's JSON ("-0.012345678901234567,")


class PineconeVectorStore(VectorStore):
    """Documents as vectors in a Pinecone index (one namespace of it).

    Upserts are split into batches within Pinecone's limits (at most `batch_size` vectors, never
    more than 1000, and under 2 MB per request) and sent concurrently, at most `max_concurrency`
    at a time. Metadata is checked before anything is sent (Pinecone stores strings, numbers,
    booleans and lists of strings, at most 40 KB per vector with the text), so a bad document
    fails the call without writing half of it. If a batch fails on the way (rate limit, 5xx,
    network), the error propagates with a note saying which batch; batches already written stay
    written, and re-running the same call is safe because ids are deterministic.

    Retrying is left to the Prefect retry policy of the step that calls the store: the SDK's own
    retries are off by default (`sdk_max_retries=0`), so attempts do not multiply. Errors keep
    the SDK's types (`pinecone.errors.RateLimitError`, `ServiceError`, `UnauthorizedError`, ...),
    which `prefect_beluga.core.retry.is_permanent` classifies by their HTTP status.

    Args:
        index_name: Name of the index; resolved to its host through Pinecone's control plane
            (one request, the first time). Not needed when `host` is given.
        host: The index's data-plane host (e.g. "docs-abc123.svc.aped-4627-b74a.pinecone.io", or
            "http://127.0.0.1:PORT" for a loopback test server). Skips the name lookup.
        api_key: Pinecone API key; defaults to the `PINECONE_API_KEY` environment variable.
            Kept as a `SecretStr`: it never appears in reprs, logs or error messages.
        namespace: Namespace to read and write ("" is the index's default namespace).
        dimension: The index's vector length; asked from the index (describe_index_stats) when
            omitted, so a mismatched embedder is caught before anything is embedded or sent.
        batch_size: Most vectors per upsert request (1 to 1000).
        max_concurrency: Most upsert requests in flight at once.
        text_key: Metadata key that holds each document's text.
        timeout: Seconds allowed for each HTTP request.
        sdk_max_retries: Retries the SDK makes by itself per request (0: leave retrying to the
            Prefect retry policy).

    Examples:
        A named index, key from the environment:

        ```python
        # example: not run (needs PINECONE_API_KEY)
        from prefect_beluga.vectorstores import PineconeVectorStore

        store = PineconeVectorStore("docs-index", namespace="handbook")
        ```

        A known host, explicit key (what a Prefect block hands over):

        ```python
        from pydantic import SecretStr

        from prefect_beluga.vectorstores import PineconeVectorStore

        store = PineconeVectorStore(host="docs-abc123.svc.pinecone.io", api_key=SecretStr("pcsk-..."))
        ```

        A loopback server in tests:

        ```python
        from prefect_beluga.testing import PineconeServer

        with PineconeServer(dimension=64) as server:
            store = PineconeVectorStore(host=server.url, api_key=server.api_key)
        ```
    """

    def __init__(
        self,
        index_name: str | None = None,
        *,
        host: str | None = None,
        api_key: SecretStr | str | None = None,
        namespace: str = "",
        dimension: int | None = None,
        batch_size: int = 100,
        max_concurrency: int = 4,
        text_key: str = "text",
        timeout: float = 30.0,
        sdk_max_retries: int = 0,
    ) -> None:
        if not index_name and not host:
            raise ValidationError("PineconeVectorStore: pass `index_name` or `host` (the index's data-plane host)")
        for option, value in (("index_name", index_name), ("host", host)):
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"PineconeVectorStore: `{option}` must be a str, got {type(value).__name__}")
        if not isinstance(namespace, str) or len(namespace) > 512:
            raise ValidationError(
                f"PineconeVectorStore: `namespace` must be a str of at most 512 characters, got {namespace!r:.80}"
            )
        check_int(dimension, "PineconeVectorStore: `dimension`", low=1, none=True)
        check_int(batch_size, "PineconeVectorStore: `batch_size`", low=1, high=MAX_BATCH_SIZE,
                  why=" (Pinecone's limit per upsert)")
        check_int(max_concurrency, "PineconeVectorStore: `max_concurrency`", low=1, high=64)
        if not isinstance(text_key, str) or not text_key:
            raise ValidationError(f"PineconeVectorStore: `text_key` must be a non-empty str, got {text_key!r}")
        check_number(timeout, "PineconeVectorStore: `timeout`", seconds=True)
        check_int(sdk_max_retries, "PineconeVectorStore: `sdk_max_retries`")
        if isinstance(api_key, str):
            api_key = SecretStr(api_key)
        if api_key is None and os.environ.get("PINECONE_API_KEY"):
            api_key = SecretStr(os.environ["PINECONE_API_KEY"])
        if api_key is not None and not isinstance(api_key, SecretStr):
            raise ValidationError(
                f"PineconeVectorStore: `api_key` must be a SecretStr or str, got {type(api_key).__name__}"
            )
        if api_key is None or not api_key.get_secret_value().strip():
            raise ValidationError(
                "PineconeVectorStore: no Pinecone API key: pass `api_key=` (e.g. from a Prefect Secret block) "
                "or set the PINECONE_API_KEY environment variable"
            )
        self.index_name = index_name
        self.host = host
        self.api_key = api_key
        self.namespace = namespace
        self.dimension = dimension
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.text_key = text_key
        self.timeout = float(timeout)
        self.sdk_max_retries = sdk_max_retries
        self._index: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f"host={self.host!r}" if self.host else f"index_name={self.index_name!r}"
        return f"PineconeVectorStore({where}, namespace={self.namespace!r}, dimension={self.dimension})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_index"] = state["_executor"] = None  # connections and threads do not travel; the copy makes its own
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- the SDK client ---------------------------------------------------------------------------

    @property
    def index(self) -> Any:
        """The SDK's `pinecone.Index` for this store (created on first use; blocking)."""
        with self._lock:
            if self._index is None:
                from pinecone import Pinecone

                # The SDK keeps half its pool alive between requests: keep one per thread.
                client = Pinecone(
                    api_key=self.api_key.get_secret_value(),
                    timeout=self.timeout,
                    connection_pool_maxsize=max(20, 2 * self.max_concurrency),
                )
                index = client.Index(name=self.index_name or "", host=self.host or "")
                set_sdk_retries(index, self.sdk_max_retries)
                self._index = index
            return self._index

    async def _call(self, method: str, /, **kwargs: Any) -> Any:
        """Run a blocking SDK call on the store's own threads (`max_concurrency` of them), so
        batches overlap, the event loop stays free, and asyncio's shared default pool (a handful
        of threads) never caps the concurrency asked for."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="pinecone-store")
            executor = self._executor

        def call() -> Any:
            return getattr(self.index, method)(**kwargs)

        try:
            return await asyncio.get_running_loop().run_in_executor(executor, call)
        except Exception as exc:
            if self.api_key is not None:
                scrub(exc, self.api_key)  # in place: the same exception, without the key
            raise

    def close(self) -> None:
        """Release the SDK's connections and the store's threads (both are made again if used)."""
        with self._lock:
            index, self._index = self._index, None
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
        if index is not None and hasattr(index, "close"):
            index.close()

    async def adimension(self) -> int | None:
        """The index's dimension: as given, else asked from the index once (describe_index_stats)."""
        if self.dimension is None:
            stats = await self._call("describe_index_stats")
            dimension = getattr(stats, "dimension", None)
            if isinstance(dimension, int) and dimension > 0:
                self.dimension = dimension
        return self.dimension

    async def acount(self) -> int:
        """How many vectors the store's namespace holds (from describe_index_stats)."""
        stats = await self._call("describe_index_stats")
        namespaces = getattr(stats, "namespaces", None) or {}
        for name in [self.namespace] if self.namespace else ["", "__default__"]:
            if name in namespaces:
                return int(namespaces[name].vector_count)
        return 0

    def count(self) -> int:
        """Sync `acount`."""
        from prefect_beluga.core._sync import run_sync

        return run_sync(self.acount())

    # -- the VectorStore primitives ---------------------------------------------------------------

    async def aupsert(
        self, ids: Sequence[str], vectors: Sequence[Sequence[float]], documents: Sequence[Document]
    ) -> None:
        ids = check_ids(ids, where="PineconeVectorStore.upsert")
        if not (len(ids) == len(vectors) == len(documents)):
            raise ValidationError(
                f"PineconeVectorStore.upsert: {len(ids)} ids, {len(vectors)} vectors and "
                f"{len(documents)} documents differ in number"
            )
        if not ids:
            return
        dimension = await self.adimension()
        records: dict[str, dict[str, Any]] = {}  # an id twice in one call: the last wins
        for id_, vector, document in zip(ids, vectors, documents, strict=True):
            if len(id_) > MAX_ID_LENGTH:
                raise ValidationError(
                    f"PineconeVectorStore.upsert: id {id_[:40]!r}... is longer than {MAX_ID_LENGTH} characters"
                )
            values = values_of(vector, id_)
            self.check_vector(values, f"the vector for id {id_!r}", dimension)
            records[id_] = {"id": id_, "values": values, "metadata": self._metadata(document, id_)}
        batches = self._batches(list(records.values()))
        await self._send(batches)

    def _metadata(self, document: Document, id_: str) -> dict[str, Any]:
        """The document's metadata as Pinecone stores it, with the text under `text_key`."""
        if not isinstance(document, Document):
            raise ValidationError(
                f"PineconeVectorStore.upsert: the document for id {id_!r} is {type(document).__name__}, "
                "expected Document"
            )
        if self.text_key in document.metadata:
            raise ValidationError(
                f"PineconeVectorStore: document {id_!r} has a metadata field {self.text_key!r}, which holds the text "
                f"(`text_key`); rename the field or choose another `text_key`"
            )
        metadata: dict[str, Any] = {}
        for key, value in document.metadata.items():
            if value is None:
                continue  # Pinecone has no null: a missing field says the same
            if isinstance(value, (str, bool)) or (isinstance(value, numbers.Real) and math.isfinite(value)):
                metadata[key] = value.item() if hasattr(value, "item") else value
            elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                metadata[key] = list(value)
            else:
                raise ValidationError(
                    f"PineconeVectorStore: metadata field {key!r} of document {id_!r} is {describe(value)}; Pinecone "
                    f"stores strings, numbers, booleans and lists of strings (convert it, e.g. to a str, or drop it)"
                )
        metadata[self.text_key] = document.page_content
        size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise ValidationError(
                f"PineconeVectorStore: document {id_!r} (source {document.metadata.get('source')!r}) "
                f"has {size} bytes of metadata with its text; Pinecone allows {MAX_METADATA_BYTES} per vector: "
                "split it into smaller chunks"
            )
        return metadata

    def _batches(self, records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """`records` in upsert requests of at most `batch_size` vectors and under 2 MB each."""
        budget = MAX_REQUEST_BYTES - _REQUEST_HEADROOM
        batches: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        used = 0
        for record in records:
            size = (
                len(json.dumps(record["metadata"], ensure_ascii=False).encode("utf-8"))
                + len(record["id"])
                + _BYTES_PER_VALUE * len(record["values"])
                + 64
            )
            if current and (len(current) >= self.batch_size or used + size > budget):
                batches.append(current)
                current, used = [], 0
            current.append(record)
            used += size
        if current:
            batches.append(current)
        return batches

    async def _send(self, batches: list[list[dict[str, Any]]]) -> None:
        """Upsert `batches`, at most `max_concurrency` at once; after a failure, start no more."""
        semaphore = asyncio.Semaphore(self.max_concurrency)
        failed = asyncio.Event()

        async def send(number: int, batch: list[dict[str, Any]]) -> None:
            async with semaphore:
                if failed.is_set():
                    return
                try:
                    await self._call("upsert", vectors=batch, namespace=self.namespace)
                except BaseException as exc:
                    failed.set()
                    add_step_note(
                        exc,
                        (
                            f"PineconeVectorStore: upsert batch {number} of {len(batches)} ({len(batch)} vectors, "
                            f"namespace {self.namespace!r}) failed; batches already written are kept and re-running "
                            f"the same add_documents is safe (deterministic ids, no duplicates)"
                        ),
                    )
                    raise

        results = await asyncio.gather(*(send(n, b) for n, b in enumerate(batches, 1)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def asimilarity_search_by_vector(
        self, vector: Sequence[float], k: int, *, filter: Filter | None = None
    ) -> tuple[list[Document], list[float]]:
        check_k(k)
        if k > MAX_TOP_K:
            raise ValidationError(
                f"PineconeVectorStore: k must be at most {MAX_TOP_K} (Pinecone's top_k limit), got {k}"
            )
        filter = check_filter(filter)
        values = values_of(vector, "the query")
        self.check_vector(values, "the query vector", await self.adimension())
        response = await self._call(
            "query", vector=values, top_k=k, namespace=self.namespace, filter=filter or None, include_metadata=True
        )
        documents, scores = [], []
        for match in getattr(response, "matches", None) or []:
            documents.append(self._document(match.id, getattr(match, "metadata", None)))
            scores.append(float(match.score))
        return documents, scores

    def _document(self, id_: str, metadata: Mapping[str, Any] | None) -> Document:
        metadata = dict(metadata or {})
        text = metadata.pop(self.text_key, "")
        return Document(id=id_, page_content=text if isinstance(text, str) else str(text), metadata=metadata)

    async def adelete(self, ids: Sequence[str]) -> None:
        ids = check_ids(ids, where="PineconeVectorStore.delete")
        for start in range(0, len(ids), _DELETE_BATCH):
            await self._call("delete", ids=ids[start : start + _DELETE_BATCH], namespace=self.namespace)

    async def alist_ids(self, prefix: str = "") -> list[str]:
        """Ids in the namespace starting with `prefix`, through Pinecone's list-by-prefix (pages of 100)."""
        if not isinstance(prefix, str) or not prefix.isascii():
            raise ValidationError(
                f"PineconeVectorStore.list_ids: prefix must be an ASCII str (Pinecone's rule), got {prefix!r:.80}"
            )
        ids: list[str] = []
        token: str | None = None
        while True:
            response = await self._call(
                "list_paginated",
                prefix=prefix or None,
                limit=_LIST_PAGE,
                pagination_token=token,
                namespace=self.namespace,
            )
            ids += [item.id for item in getattr(response, "vectors", None) or []]
            token = getattr(getattr(response, "pagination", None), "next", None)
            if not token:
                return sorted(ids)

    async def aget_by_ids(self, ids: Sequence[str]) -> list[Document]:
        ids = check_ids(ids, where="PineconeVectorStore.get_by_ids")
        found: dict[str, Document] = {}
        for start in range(0, len(ids), _FETCH_BATCH):
            response = await self._call("fetch", ids=ids[start : start + _FETCH_BATCH], namespace=self.namespace)
            for id_, vector in (getattr(response, "vectors", None) or {}).items():
                found[id_] = self._document(id_, getattr(vector, "metadata", None))
        return [found[i] for i in ids if i in found]


__all__ = ["PineconeVectorStore"]
