"""A loopback Pinecone data-plane server for tests, with fault injection.

It speaks the REST protocol the official `pinecone` SDK uses against an index host, so the SDK
talks to it over HTTP on 127.0.0.1 with nothing patched:

    ```python
    from pinecone import Pinecone
    from prefect_beluga.testing import PineconeServer
    with PineconeServer(api_key="pc-test", dimension=3) as server:
        index = Pinecone(api_key="pc-test").Index(host=server.url)
        _ = index.upsert(vectors=[("a", [1.0, 0.0, 0.0], {"text": "hello"})], namespace="docs")
        index.query(vector=[1.0, 0.1, 0.0], top_k=1, namespace="docs", include_metadata=True).matches[0].id
    # 'a'
    ```

Endpoints (JSON bodies, camelCase as on the wire; every request needs the `Api-Key` header when
`api_key` is set, else 401):

    POST /vectors/upsert         {"vectors": [{"id", "values", "metadata"?}], "namespace"?}
    POST /query                  {"topK", "vector" | "id", "namespace"?, "filter"?,
                                  "includeValues"?, "includeMetadata"?}
    GET  /vectors/fetch          ?ids=a&ids=b&namespace=ns
    POST /vectors/delete         {"ids" | "deleteAll" | "filter", "namespace"}
    POST /vectors/update         {"id", "values"?, "setMetadata"?, "namespace"?}
    GET  /vectors/list           ?namespace=ns&prefix=p&limit=n&paginationToken=t
    POST /describe_index_stats   {} -> per-namespace counts, dimension, metric

Scores are cosine similarities (or dot products with `metric="dotproduct"`). Pinecone's limits
are enforced: at most 1000 vectors and 2 MB per upsert (400 / 413), 40 KB of metadata per vector,
metadata values that are strings, numbers, booleans or lists of strings, ids of 1-512
characters, vectors of the index's dimension. A request that breaks one is rejected whole.

Every request is recorded (`server.requests`, `server.requests_to(path)`, `server.request_counts`);
`server.vector_count(namespace)` and `server.vectors(namespace)` show what is stored, so a test
can assert that nothing was lost or duplicated. Faults are a queue, each consumed by one request
(optionally only requests to one path):

    server.fail_next(429, times=2, retry_after=1)    # 429 + Retry-After, twice
    server.fail_next(503, path="/vectors/upsert")    # a 5xx for the next upsert
    server.slow_next(5.0)                            # answer after 5 s (past a client timeout)
    server.drop_next()                               # close the connection without a reply
    server.drop_next(after_apply=True)               # apply the request, then drop the reply
    server.malformed_next()                          # 200 with a body that is not valid JSON

`latency` delays every request; `max_in_flight` is the highest number of requests served at once.
In pytest, use the `pinecone_server` fixture (import it into your `conftest.py`).

Note: the SDK (v10) retries 408/429/5xx and connection errors itself, up to 3 times per request;
`PineconeVectorStore` turns that off (`sdk_max_retries=0`) so the Prefect retry policy owns it.
"""

from __future__ import annotations

import json
import math
import numbers
from array import array
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

from prefect_beluga.testing._loopback import Fault, LoopbackServer
from prefect_beluga.testing._pinecone_protocol import (
    DEFAULT_NAMESPACE_LABEL,
    MAX_METADATA_BYTES,
    MAX_REQUEST_BYTES,
    MAX_TOP_K,
    MAX_VECTORS_PER_UPSERT,
    PineconeHandler,
    _BadRequest,
    _check_filter,
    _check_id,
    _matches,
    _namespace_of,
    _public,
)


class PineconeServer(LoopbackServer):
    """A loopback Pinecone index host (the data plane) running in a background thread.

    Args:
        api_key: When set, requests must carry this `Api-Key` header (else 401).
        dimension: The index's vector length.
        metric: "cosine" (default) or "dotproduct".
        latency: Response time of every request, in seconds (the reply's own work happens within it).
        max_vectors_per_upsert: Most vectors one upsert may carry (Pinecone: 1000).
        max_request_bytes: Largest request body accepted (Pinecone: 2 MB), else 413.
        max_metadata_bytes: Most metadata per vector, as JSON (Pinecone: 40 KB).
        host: Address to bind (loopback only).
        port: Port to bind; 0 (default) picks a free one.

    Examples:
        ```python
        from prefect_beluga.embeddings import HashingEmbedder
        from prefect_beluga.schema import Document
        from prefect_beluga.testing import PineconeServer
        from prefect_beluga.vectorstores import PineconeVectorStore

        chunks = [Document(page_content=f"chunk {i}") for i in range(250)]
        with PineconeServer(dimension=64) as server:
            store = PineconeVectorStore(host=server.url, api_key=server.api_key)
            store.add_documents(chunks, HashingEmbedder(64))
            assert server.vector_count() == len(chunks)
            assert len(server.requests_to("/vectors/upsert")) == 3  # batches of 100
        ```
    """

    def __init__(
        self,
        *,
        api_key: str | None = "pc-test",
        dimension: int = 384,
        metric: str = "cosine",
        latency: float = 0.0,
        max_vectors_per_upsert: int = MAX_VECTORS_PER_UPSERT,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
            raise ValueError(f"dimension must be an int >= 1, got {dimension!r}")
        if metric not in ("cosine", "dotproduct"):
            raise ValueError(f"metric must be 'cosine' or 'dotproduct', got {metric!r}")
        super().__init__(latency=latency, host=host, port=port)
        self.api_key = api_key
        self.dimension = dimension
        self.metric = metric
        self.max_vectors_per_upsert = max_vectors_per_upsert
        self.max_request_bytes = max_request_bytes
        self.max_metadata_bytes = max_metadata_bytes
        self._namespaces: dict[str, dict[str, dict[str, Any]]] = {}
        self._statuses: list[tuple[str, int]] = []

    thread_name = "pinecone-loopback"

    @property
    def handler(self) -> type[BaseHTTPRequestHandler]:
        return PineconeHandler

    @property
    def url(self) -> str:
        """The index host to give the SDK: `http://127.0.0.1:<port>`."""
        return f"http://{self._host}:{self.port}"

    host = url

    # -- scripting -------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | str | None = None,
        body: Any = None,
        path: str | None = None,
    ) -> None:
        """Answer the next `times` requests with HTTP `status` and a Pinecone-style error body.

        `retry_after` sets the `Retry-After` header; `body` replaces the error body; `path`
        limits the fault to requests to that path (e.g. "/vectors/upsert").
        """
        self._queue(Fault("status", status=status, retry_after=retry_after, body=body, path=path), times)

    def drop_next(self, *, times: int = 1, path: str | None = None, after_apply: bool = False) -> None:
        """Close the connection without a reply for the next `times` requests.

        With `after_apply=True` the request takes effect first (as when a reply is lost on the
        way back), so a client that retries sends the same write twice.
        """
        self._queue(Fault("drop_after" if after_apply else "drop", path=path), times)

    def malformed_next(self, *, times: int = 1, body: str = '{"upsertedCount": ', path: str | None = None) -> None:
        """Answer the next `times` requests with status 200 and a body that is not valid JSON."""
        self._queue(Fault("malformed", body=body, path=path), times)

    # -- inspection ------------------------------------------------------------------------------

    @property
    def request_counts(self) -> Counter[str]:
        """How many requests each path received, e.g. `{"/vectors/upsert": 3, "/query": 1}`."""
        return Counter(r.path for r in self.requests)

    @property
    def responses(self) -> list[tuple[str, int]]:
        """(path, HTTP status) of every answered request, in order (dropped ones are absent)."""
        with self._lock:
            return list(self._statuses)

    @property
    def namespaces(self) -> list[str]:
        """Namespaces holding at least one vector."""
        with self._lock:
            return sorted(name for name, vectors in self._namespaces.items() if vectors)

    def vector_count(self, namespace: str | None = None) -> int:
        """Vectors stored in `namespace`, or in all namespaces when None."""
        with self._lock:
            if namespace is None:
                return sum(len(v) for v in self._namespaces.values())
            return len(self._namespaces.get(namespace, {}))

    def vectors(self, namespace: str = "") -> dict[str, dict[str, Any]]:
        """A copy of `namespace`: id -> {"id", "values", "metadata"}."""
        with self._lock:
            return {i: json.loads(json.dumps(r)) for i, r in self._namespaces.get(namespace, {}).items()}

    def reset(self, *, keep_vectors: bool = False) -> None:
        """Forget recorded requests, queued faults and `max_in_flight` (and the vectors, unless kept)."""
        with self._lock:
            self._requests.clear()
            self._statuses.clear()
            self._faults.clear()
            self.max_in_flight = 0
            if not keep_vectors:
                self._namespaces.clear()

    # -- called by the handler -------------------------------------------------------------------

    def _answered(self, path: str, status: int) -> None:
        with self._lock:
            self._statuses.append((path, status))

    # -- the index -------------------------------------------------------------------------------

    def _upsert(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace_of(body)
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise _BadRequest("vectors must be a non-empty array")
        if len(vectors) > self.max_vectors_per_upsert:
            raise _BadRequest(
                f"Too many vectors in one upsert request: {len(vectors)}; the maximum is {self.max_vectors_per_upsert}"
            )
        records = []
        for index, vector in enumerate(vectors):
            if not isinstance(vector, dict):
                raise _BadRequest(f"vectors[{index}] must be an object")
            id_ = _check_id(vector.get("id"), f"vectors[{index}].id")
            values = self._check_values(vector.get("values"), f"vectors[{index}]")
            if vector.get("sparseValues") is not None:
                raise _BadRequest("Sparse values are not supported by this dense index")
            metadata = vector.get("metadata")
            if metadata is not None:
                self._check_metadata(metadata, id_)
            records.append({"id": id_, "values": values, "metadata": metadata})
        with self._lock:  # all or nothing: every vector was checked before any is stored
            stored = self._namespaces.setdefault(namespace, {})
            for record in records:
                stored[record["id"]] = record
        return {"upsertedCount": len(records)}

    def _query(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace_of(body)
        top_k = body.get("topK")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise _BadRequest(f"topK must be an integer between 1 and {MAX_TOP_K}, got {top_k!r}")
        if (body.get("vector") is None) == (body.get("id") is None):
            raise _BadRequest("Exactly one of vector or id must be provided")
        filter = body.get("filter")
        if filter is not None:
            _check_filter(filter)
        with self._lock:
            stored = list(self._namespaces.get(namespace, {}).values())
        if body.get("id") is not None:
            found = [r for r in stored if r["id"] == body["id"]]
            if not found:
                return {"matches": [], "namespace": namespace, "usage": {"readUnits": 1}}
            query = found[0]["values"]
        else:
            query = self._check_values(body["vector"], "vector")
        candidates = [r for r in stored if filter is None or _matches(r["metadata"] or {}, filter)]
        scored = sorted(
            ((self._score(query, r["values"]), order, r) for order, r in enumerate(candidates)),
            key=lambda item: (-item[0], item[1]),
        )[:top_k]
        matches = []
        for score, _, record in scored:
            match: dict[str, Any] = {
                "id": record["id"],
                "score": score,
                "values": record["values"] if body.get("includeValues") else [],
            }
            if body.get("includeMetadata") and record["metadata"] is not None:
                match["metadata"] = record["metadata"]
            matches.append(match)
        return {
            "results": [],
            "matches": matches,
            "namespace": namespace,
            "usage": {"readUnits": max(1, len(stored) // 1000 + 1)},
        }

    def _fetch(self, query: dict[str, list[str]]) -> dict[str, Any]:
        ids = query.get("ids") or []
        if not ids:
            raise _BadRequest("ids must be provided")
        if len(ids) > 1000:
            raise _BadRequest(f"Too many ids to fetch: {len(ids)}; the maximum is 1000")
        namespace = (query.get("namespace") or [""])[0]
        with self._lock:
            stored = self._namespaces.get(namespace, {})
            vectors = {i: _public(stored[i]) for i in ids if i in stored}
        return {"vectors": vectors, "namespace": namespace, "usage": {"readUnits": 1}}

    def _delete(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace_of(body)
        ids, delete_all, filter = body.get("ids"), body.get("deleteAll"), body.get("filter")
        if sum(x is not None and x is not False for x in (ids, delete_all, filter)) != 1:
            raise _BadRequest("Exactly one of ids, deleteAll or filter must be provided")
        if filter is not None:
            _check_filter(filter)
        if ids is not None:
            if not isinstance(ids, list) or len(ids) > 1000:
                raise _BadRequest("ids must be an array of at most 1000 ids")
            for index, id_ in enumerate(ids):
                _check_id(id_, f"ids[{index}]")
        with self._lock:
            stored = self._namespaces.get(namespace, {})
            if delete_all:
                stored.clear()
            elif filter is not None:
                for id_ in [i for i, r in stored.items() if _matches(r["metadata"] or {}, filter)]:
                    del stored[id_]
            else:
                for id_ in ids:
                    stored.pop(id_, None)
        return {}

    def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace_of(body)
        id_ = _check_id(body.get("id"), "id")
        values = self._check_values(body["values"], "values") if body.get("values") is not None else None
        set_metadata = body.get("setMetadata")
        if set_metadata is not None:
            self._check_metadata(set_metadata, id_)
        with self._lock:
            record = self._namespaces.get(namespace, {}).get(id_)
            if record is None:
                raise _BadRequest(f"Vector {id_} not found in namespace {namespace!r}", status=404)
            if values is not None:
                record["values"] = values
            if set_metadata is not None:
                record["metadata"] = {**(record["metadata"] or {}), **set_metadata}
        return {}

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        namespace = (query.get("namespace") or [""])[0]
        prefix = (query.get("prefix") or [""])[0]
        try:
            limit = int((query.get("limit") or ["100"])[0])
            start = int((query.get("paginationToken") or ["0"])[0])
        except ValueError:
            raise _BadRequest("limit and paginationToken must be integers") from None
        if not 1 <= limit <= 100:
            raise _BadRequest("limit must be between 1 and 100")
        with self._lock:
            ids = sorted(i for i in self._namespaces.get(namespace, {}) if i.startswith(prefix))
        page = ids[start : start + limit]
        reply: dict[str, Any] = {
            "vectors": [{"id": i} for i in page],
            "namespace": namespace,
            "usage": {"readUnits": 1},
        }
        if start + limit < len(ids):
            reply["pagination"] = {"next": str(start + limit)}
        return reply

    def _describe_index_stats(self, body: dict[str, Any] | None) -> dict[str, Any]:
        if body and body.get("filter"):
            raise _BadRequest(
                "Serverless and starter indexes do not support describing index stats with metadata filtering."
            )
        with self._lock:
            namespaces = {
                (name or DEFAULT_NAMESPACE_LABEL): {"vectorCount": len(vectors)}
                for name, vectors in self._namespaces.items()
                if vectors
            }
        return {
            "namespaces": namespaces,
            "dimension": self.dimension,
            "indexFullness": 0.0,
            "totalVectorCount": sum(n["vectorCount"] for n in namespaces.values()),
            "metric": self.metric,
            "vectorType": "dense",
        }

    # -- checks ----------------------------------------------------------------------------------

    def _check_values(self, values: Any, where: str) -> list[float]:
        # Checked and converted in C (`bool in map(type, ...)`, `array`): a Python-level pass
        # per value made this server, not its clients, the bottleneck of an ingest benchmark.
        try:
            if not isinstance(values, list) or bool in map(type, values):
                raise TypeError
            floats = array("d", values).tolist()
        except (TypeError, OverflowError):
            raise _BadRequest(f"{where}: values must be an array of numbers") from None
        if len(floats) != self.dimension:
            raise _BadRequest(
                f"Vector dimension {len(floats)} does not match the dimension of the index {self.dimension}"
            )
        if not math.isfinite(sum(floats)) and not all(math.isfinite(v) for v in floats):
            raise _BadRequest(f"{where}: values must be finite numbers")
        return floats

    def _check_metadata(self, metadata: Any, id_: str) -> None:
        if not isinstance(metadata, dict):
            raise _BadRequest(f"Metadata of vector {id_} must be an object")
        for key, value in metadata.items():
            ok = (
                isinstance(value, (str, bool))
                or (isinstance(value, numbers.Real) and math.isfinite(value))
                or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            )
            if not ok:
                raise _BadRequest(
                    f"Metadata value must be a string, number, boolean or list of strings, got "
                    f"{json.dumps(value)[:40]} for field {key!r} of vector {id_}"
                )
        size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > self.max_metadata_bytes:
            raise _BadRequest(
                f"Metadata size is {size} bytes, which exceeds the limit of {self.max_metadata_bytes} bytes per vector"
            )

    def _score(self, a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        if self.metric == "dotproduct":
            return dot
        norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return dot / norms if norms else 0.0


__all__ = ["PineconeServer"]
