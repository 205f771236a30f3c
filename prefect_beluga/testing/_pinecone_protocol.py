"""The wire side of the loopback Pinecone server: request checks, filter semantics, the HTTP handler.

`pinecone_server.PineconeServer` holds the index (namespaces of vectors) and the scripting and
inspection API (`PineconeState`: what the handler reads of it); this module turns HTTP requests
into calls on it and its replies (and errors) into Pinecone's JSON, so the official SDK talks to
it unpatched.
"""

from __future__ import annotations

import json
import numbers
import operator as _operator
import socket
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from prefect_beluga.testing._loopback import Fault, LoopbackHandler, RecordedRequest

MAX_VECTORS_PER_UPSERT = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_ID_LENGTH = 512
MAX_TOP_K = 10_000
DEFAULT_NAMESPACE_LABEL = "__default__"  # how describe_index_stats names the "" namespace

# gRPC status codes Pinecone puts in its error bodies.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 412: 9, 413: 3, 429: 8, 500: 13, 501: 12, 503: 14, 504: 4}
_COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
_ORDERINGS = {"$gt": _operator.gt, "$gte": _operator.ge, "$lt": _operator.lt, "$lte": _operator.le}


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _namespace_of(body: dict[str, Any]) -> str:
    namespace = body.get("namespace") or ""
    if not isinstance(namespace, str):
        raise _BadRequest("namespace must be a string")
    return namespace


def _check_id(id_: Any, where: str) -> str:
    if not isinstance(id_, str) or not 1 <= len(id_) <= MAX_ID_LENGTH:
        raise _BadRequest(f"{where} must be a string of 1 to {MAX_ID_LENGTH} characters")
    return id_


def _public(record: dict[str, Any]) -> dict[str, Any]:
    out = {"id": record["id"], "values": record["values"]}
    if record["metadata"] is not None:
        out["metadata"] = record["metadata"]
    return out


def _check_filter(filter: Any) -> None:
    if not isinstance(filter, dict):
        raise _BadRequest("filter must be an object")
    for field, condition in filter.items():
        if field in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise _BadRequest(f"{field} must be a non-empty array of filters")
            for part in condition:
                _check_filter(part)
        elif field.startswith("$"):
            raise _BadRequest(f"illegal condition: unknown operator {field}")
        elif isinstance(condition, dict):
            for operator, operand in condition.items():
                if operator not in _COMPARISONS:
                    raise _BadRequest(f"illegal condition for field {field}, got {json.dumps({operator: operand})}")
                if operator in ("$in", "$nin") and not isinstance(operand, list):
                    raise _BadRequest(f"{operator} for field {field} must be an array")


def _same(value: Any, operand: Any) -> bool:
    """Equal and both or neither a bool (True is not 1 to Pinecone)."""
    return value == operand and isinstance(value, bool) == isinstance(operand, bool)


def _matches(metadata: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """Pinecone's metadata filter semantics (a list-valued field matches through any item)."""
    for field, condition in filter.items():
        if field == "$and":
            if not all(_matches(metadata, part) for part in condition):
                return False
        elif field == "$or":
            if not any(_matches(metadata, part) for part in condition):
                return False
        else:
            present = field in metadata
            value = metadata.get(field)
            items = value if isinstance(value, list) else [value]
            for operator, operand in (condition if isinstance(condition, dict) else {"$eq": condition}).items():
                if operator == "$exists":
                    ok = present == operand
                elif operator == "$eq":
                    ok = present and any(_same(v, operand) for v in items)
                elif operator == "$ne":
                    ok = not present or not any(_same(v, operand) for v in items)
                elif operator == "$in":
                    ok = present and any(_same(v, o) for v in items for o in operand)
                elif operator == "$nin":
                    ok = not present or not any(_same(v, o) for v in items for o in operand)
                else:
                    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
                    ok = numeric and _ORDERINGS[operator](value, operand)
                if not ok:
                    return False
    return True


class PineconeState(Protocol):
    """What the handler reads of the `PineconeServer` it answers for: settings and index operations."""

    api_key: str | None
    max_request_bytes: int

    def _fetch(self, query: dict[str, list[str]]) -> dict[str, Any]: ...
    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]: ...
    def _describe_index_stats(self, body: dict[str, Any] | None) -> dict[str, Any]: ...
    def _upsert(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def _query(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def _delete(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def _update(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def _answered(self, path: str, status: int) -> None: ...
    def _wait(self, seconds: float) -> None: ...


class PineconeHandler(LoopbackHandler):
    """Answers one connection's requests as the Pinecone index host `server_state` describes."""

    server_state: PineconeState  # a PineconeServer
    server_version = "pinecone-loopback/1.0"

    def _respond(self, request: RecordedRequest, fault: Fault | None) -> None:
        state, path = self.server_state, request.path
        drop_after = False
        if fault is not None:
            if fault.kind == "drop_after":
                drop_after = True
            elif self._apply(fault, path):
                return
        api_key = request.headers.get("api-key")
        if state.api_key is not None and api_key != state.api_key:
            self._error(path, 401, "Invalid API Key" if api_key else "Missing API Key")
            return
        query = parse_qs(urlsplit(self.path).query)
        try:
            reply = self._route(request.method, path, query, request.body, len(request.raw))
        except _BadRequest as exc:
            if drop_after:
                self._drop()
                return
            self._error(path, exc.status, str(exc))
            return
        if drop_after:
            self._drop()
            return
        self._json(path, 200, reply)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any, size: int) -> dict[str, Any]:
        state = self.server_state
        if size > state.max_request_bytes:
            raise _BadRequest(
                f"Request size {size} bytes exceeds the maximum supported size of {state.max_request_bytes} bytes", 413
            )
        if method == "GET" and path == "/vectors/fetch":
            return state._fetch(query)
        if method == "GET" and path == "/vectors/list":
            return state._list(query)
        if path == "/describe_index_stats" and method in ("GET", "POST"):
            return state._describe_index_stats(body if isinstance(body, dict) else None)
        routes = {"/vectors/upsert": state._upsert, "/query": state._query,
                  "/vectors/delete": state._delete, "/vectors/update": state._update}
        if method != "POST" or path not in routes:
            raise _BadRequest(f"Not found: {method} {path}", 404)
        if not isinstance(body, dict):
            raise _BadRequest("The request body must be a JSON object")
        return routes[path](body)

    def _apply(self, fault: Fault, path: str) -> bool:
        """Act out `fault`; True if the request is thereby answered (or dropped)."""
        if fault.kind == "slow":
            self.server_state._wait(fault.delay)
            return False
        if fault.kind == "drop":
            self._drop()
            return True
        if fault.kind == "malformed":
            self._send(path, 200, str(fault.body).encode())
            return True
        headers = {"retry-after": str(fault.retry_after)} if fault.retry_after is not None else {}
        if fault.body is not None:
            payload = fault.body if isinstance(fault.body, (bytes, str)) else json.dumps(fault.body)
            self._send(path, fault.status, payload.encode() if isinstance(payload, str) else payload, headers)
        else:
            message = {429: "Request rate limit exceeded. Please slow down your request rate.",
                       503: "Service unavailable."}.get(fault.status, f"Injected fault: HTTP {fault.status}.")
            self._error(path, fault.status, message, headers)
        return True

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, path: str, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self._hold()
        # Recorded before a byte is sent: a client that has read the reply sees it in `responses`.
        self.server_state._answered(path, status)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-pinecone-request-id", f"loopback-{time.monotonic_ns()}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, path: str, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(path, status, json.dumps(data).encode(), headers)

    def _error(self, path: str, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(path, status, {"code": _GRPC_CODES.get(status, 2), "message": message, "details": []}, headers)
