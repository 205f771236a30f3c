"""A loopback OpenAI-compatible HTTP server for tests, with fault injection.

It speaks the real wire protocol, so the official `openai` SDK talks to it over HTTP on
127.0.0.1 with nothing patched:

    ```python
    from openai import OpenAI
    from prefect_beluga.testing import OpenAIServer
    with OpenAIServer(api_key="sk-test") as server:
        client = OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        reply.choices[0].message.content  # -> 'Echo: hello'
    ```

Endpoints: `POST /v1/chat/completions` (JSON, or Server-Sent Events with `"stream": true`,
including the usage chunk of `stream_options.include_usage`), `POST /v1/embeddings`
(deterministic unit vectors; `dimensions` honoured; `encoding_format` "float" or "base64", the
SDK's default) and `GET /v1/models`.

Replies are deterministic: "Echo: <last user message>" unless replies were scripted with
`reply_with(...)` or a `responder(messages) -> str` was given. Usage counts are tiktoken counts.
A scripted reply may be a dict asking for tool calls, as an agent's model would:

    server.reply_with(
        {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]},   # turn 1: call a tool
        "The sum is 3.",                                                    # turn 2: answer
    )
    server.tool_results()        # the tool messages the client sent back in its last request

Every request is recorded (`server.requests`: method, path, headers, JSON body). Faults are a
queue, each consumed by one request (optionally only requests to one path):

    server.fail_next(429, times=2, retry_after=1)   # 429 + Retry-After, twice
    server.fail_next(503)                           # a 5xx
    server.slow_next(5.0)                           # answer after 5 s (past a client timeout)
    server.drop_next()                              # close the connection without a reply
    server.malformed_next()                         # 200 with a body that is not valid JSON
    server.break_stream_next(after=3)               # a stream that fails after 3 text chunks

`chunk_delay` spaces a stream's chunks (seconds between two writes) and every text chunk
written is recorded in `server.chunks` (`time.perf_counter()` of the write, and the text), so
a test can compare when the server wrote a chunk with when its caller received it.

With `api_key=` set, a request whose bearer token differs gets OpenAI's 401 reply. `latency`
adds a delay to every request; `max_in_flight` reports the highest number of requests served at
once (to check client-side concurrency limits without timing anything).

In pytest, use the `openai_server` fixture (import it into your `conftest.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import socket
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from prefect_beluga.testing._loopback import Fault, LoopbackHandler, LoopbackServer, RecordedRequest

#: A scripted chat reply: its text, or `{"content": str | None, "tool_calls": [{"name": str,
#: "arguments": dict | str, "id": str (optional)}, ...]}`.
Reply = str | dict[str, Any]
Responder = Callable[[list[dict[str, Any]]], Reply]


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("insufficient_permissions", None),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", None),
    409: ("conflict", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


class OpenAIServer(LoopbackServer):
    """A loopback OpenAI-compatible server running in a background thread.

    Args:
        api_key: When set, requests must carry `Authorization: Bearer <api_key>` (else 401).
        dimension: Length of embedding vectors when a request does not ask for `dimensions`.
        honour_dimensions: Whether the `dimensions` request parameter is obeyed (set False to
            simulate a server returning vectors of an unexpected size).
        latency: Response time of every request, in seconds (the reply's own work happens within it).
        replies: Scripted chat replies, used in order before falling back to the echo reply.
        responder: `f(messages) -> str` computing the chat reply (instead of the echo).
        host: Address to bind (loopback only).
        port: Port to bind; 0 (default) picks a free one.

    Examples:
        ```python
        with OpenAIServer() as server:
            server.fail_next(429, retry_after=1)
            ...  # point a client at server.base_url
            assert len(server.requests_to("/v1/chat/completions")) == 2
        ```
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        dimension: int = 1536,
        honour_dimensions: bool = True,
        latency: float = 0.0,
        replies: Sequence[Reply] = (),
        responder: Responder | None = None,
        chunk_delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be an int >= 1, got {dimension!r}")
        super().__init__(latency=latency, host=host, port=port)
        self.api_key = api_key
        self.dimension = dimension
        self.honour_dimensions = honour_dimensions
        self.responder = responder
        self._replies: deque[Reply] = deque(_check_reply(r) for r in replies)
        if not chunk_delay >= 0:
            raise ValueError(f"chunk_delay must be seconds >= 0, got {chunk_delay!r}")
        self.chunk_delay = chunk_delay
        self._chunks: list[tuple[float, str]] = []
        self._breaks: deque[int] = deque()

    thread_name = "openai-loopback"

    @property
    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    @property
    def base_url(self) -> str:
        """The `base_url` to give the SDK: `http://127.0.0.1:<port>/v1`."""
        return f"{self.url}/v1"

    # -- scripting -------------------------------------------------------------------------

    def reply_with(self, *replies: Reply) -> None:
        """Queue chat replies, used in order (then the echo reply again).

        A reply is its text, or a dict with `content` and/or `tool_calls` (a list of
        `{"name", "arguments", "id"?}`; arguments a dict or a JSON string, sent as given).
        """
        checked = [_check_reply(reply) for reply in replies]
        with self._lock:
            self._replies.extend(checked)

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
        body: Any = None,
        path: str | None = None,
    ) -> None:
        """Answer the next `times` requests with HTTP `status` and an OpenAI-style error body.

        `retry_after` sets the `Retry-After` header (seconds or an HTTP date), `retry_after_ms`
        the `retry-after-ms` header; `body` replaces the error body; `path` limits the fault to
        requests to that path (e.g. "/v1/embeddings").
        """
        self._queue(Fault("status", status=status, retry_after=retry_after,
                          retry_after_ms=retry_after_ms, body=body, path=path), times)

    def drop_next(self, *, times: int = 1, path: str | None = None) -> None:
        """Close the connection without any reply, for the next `times` requests."""
        self._queue(Fault("drop", path=path), times)

    def malformed_next(
        self, *, times: int = 1, body: str = '{"id": "chatcmpl-broken", "choices": [', path: str | None = None
    ) -> None:
        """Answer the next `times` requests with status 200 and a body that is not valid JSON."""
        self._queue(Fault("malformed", body=body, path=path), times)

    def break_stream_next(self, *, after: int = 1, times: int = 1) -> None:
        """Fail the next `times` streamed replies midway: after `after` text chunks, an SSE
        error event (which the `openai` SDK raises as an `APIError`) ends the stream."""
        if not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be an int >= 0, got {after!r}")
        with self._lock:
            self._breaks.extend([after] * times)

    # -- inspection ------------------------------------------------------------------------

    def tool_results(self, request: int = -1) -> list[dict[str, Any]]:
        """The tool messages (`role: tool`) the client sent in chat request number `request`."""
        chats = self.requests_to("/v1/chat/completions")
        if not chats:
            return []
        messages = (chats[request].body or {}).get("messages") or []
        return [m for m in messages if isinstance(m, dict) and m.get("role") == "tool"]

    @property
    def chunks(self) -> list[tuple[float, str]]:
        """Every streamed text chunk written so far: `(time.perf_counter() of the write, text)`."""
        with self._lock:
            return list(self._chunks)

    def reset(self) -> None:
        """Forget recorded requests, queued faults and replies, and `max_in_flight`."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._replies.clear()
            self._chunks.clear()
            self._breaks.clear()
            self.max_in_flight = 0

    # -- called by the handler -------------------------------------------------------------

    def _chat_reply(self, messages: list[dict[str, Any]]) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if self.responder is not None:
            return self.responder(messages)
        for message in reversed(messages):
            if message.get("role") == "user":
                return f"Echo: {_text_of(message.get('content'))}"
        return "Echo: "


def _check_reply(reply: Any) -> Reply:
    if isinstance(reply, str):
        return reply
    if not isinstance(reply, dict) or set(reply) - {"content", "tool_calls"}:
        raise ValueError(f"a scripted reply is a str or a dict with 'content' / 'tool_calls', got {reply!r:.80}")
    calls = reply.get("tool_calls") or []
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        raise ValueError(f"'tool_calls' must be a list of {{'name': str, 'arguments': ...}}, got {calls!r:.80}")
    return reply


def _split_reply(reply: Reply) -> tuple[str, list[dict[str, Any]]]:
    """A scripted reply as its text and its tool calls in OpenAI's wire shape."""
    if isinstance(reply, str):
        return reply, []
    calls = []
    for call in reply.get("tool_calls") or ():
        arguments = call.get("arguments", {})
        calls.append(
            {
                "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    return reply.get("content") or "", calls


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _count(text: str) -> int:
    from prefect_beluga.tokens import count_tokens

    return count_tokens(text)


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return 3 + sum(3 + _count(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))


def embedding_vector(text: str, dimension: int) -> list[float]:
    """The deterministic unit vector the server returns for `text` (float32-exact)."""
    values: list[float] = []
    counter = 0
    while len(values) < dimension:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b / 127.5) - 1.0 for b in digest)
        counter += 1
    values = values[:dimension]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Round-trip through float32 so "float" and "base64" replies carry identical numbers.
    packed = struct.pack(f"<{dimension}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimension}f", packed))


def _mask(key: str) -> str:
    """How OpenAI shows a wrong key in its 401 message: all but the last 4 characters hidden."""
    return f"{key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}" if len(key) > 8 else "****"


class _Handler(LoopbackHandler):
    server_state: OpenAIServer
    server_version = "openai-loopback/1.0"

    # -- plumbing --------------------------------------------------------------------------

    def _respond(self, request: RecordedRequest, fault: Fault | None) -> None:
        state = self.server_state
        method, path, headers, body = request.method, request.path, request.headers, request.body
        if fault is not None and self._apply(fault):
            return
        if state.api_key is not None and headers.get("authorization") != f"Bearer {state.api_key}":
            sent = headers.get("authorization", "")[7:]
            message = (
                f"Incorrect API key provided: {_mask(sent)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
                if sent
                else "You didn't provide an API key."
            )
            self._error(401, message)
            return
        route = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
        }.get((method, path))
        if route is None:
            self._error(404, f"Invalid URL ({method} {path})")
            return
        if method == "POST" and not isinstance(body, dict):
            self._error(400, "We could not parse the JSON body of your request.")
            return
        route(body)

    def _apply(self, fault: Fault) -> bool:
        """Act out `fault`; True if the request is thereby answered (or dropped)."""
        if fault.kind == "slow":
            self.server_state._wait(fault.delay)
            return False
        if fault.kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if fault.kind == "malformed":
            self._send(200, str(fault.body).encode(), content_type="application/json")
            return True
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = str(fault.retry_after)
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        if fault.body is not None:
            payload = fault.body if isinstance(fault.body, (bytes, str)) else json.dumps(fault.body)
            self._send(
                fault.status,
                payload.encode() if isinstance(payload, str) else payload,
                content_type="application/json",
                headers=headers,
            )
        else:
            message = {429: "Rate limit reached for requests. Please try again later."}.get(
                fault.status, f"Injected fault: HTTP {fault.status}."
            )
            self._error(fault.status, message, headers=headers)
        return True

    def _send(self, status: int, payload: bytes, *, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._hold()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:16]}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), content_type="application/json", headers=headers)

    def _error(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        kind, code = _ERROR_TYPES.get(status, ("server_error", None))
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)

    # -- endpoints -------------------------------------------------------------------------

    def _models(self, body: Any) -> None:
        self._json(
            200,
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "loopback"}
                    for name in ("gpt-4o-mini", "text-embedding-3-small")
                ],
            },
        )

    def _chat(self, body: dict[str, Any]) -> None:
        state = self.server_state
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            self._error(400, "you must provide a model parameter")
            return
        if not isinstance(messages, list) or not messages:
            self._error(400, "'messages' must be a non-empty array")
            return
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            self._error(400, "each message must be an object with a 'role'")
            return
        reply, tool_calls = _split_reply(state._chat_reply(messages))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        finish_reason = "tool_calls" if tool_calls else "stop"
        if isinstance(max_tokens, int) and max_tokens > 0:
            from prefect_beluga.tokens import count_tokens, truncate

            if count_tokens(reply) > max_tokens:
                reply, finish_reason = truncate(reply, max_tokens), "length"
        prompt = _prompt_tokens(messages)
        usage = {"prompt_tokens": prompt, "completion_tokens": _count(reply), "total_tokens": prompt + _count(reply)}
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(
                completion_id, created, model, reply, finish_reason, usage if include_usage else None, tool_calls
            )
            return
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply if reply or not tool_calls else None,
            "refusal": None,
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        self._json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage,
                "system_fingerprint": "fp_loopback",
            },
        )

    def _stream(
        self,
        completion_id: str,
        created: int,
        model: str,
        reply: str,
        finish_reason: str,
        usage: dict[str, int] | None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        self._hold()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict[str, Any], finish: str | None, choices: bool = True, **extra: Any) -> None:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_loopback",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
            }
            if usage is not None:
                data["usage"] = None
            data.update(extra)
            self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

        state = self.server_state
        with state._lock:
            breaks_after = state._breaks.popleft() if state._breaks else None
        chunk({"role": "assistant", "content": ""}, None)
        for index, piece in enumerate(_pieces(reply)):
            if breaks_after is not None and index >= breaks_after:
                error = {"message": "Injected fault: the stream broke midway.", "type": "server_error",
                         "param": None, "code": None}
                self.wfile.write(f"data: {json.dumps({'error': error})}\n\n".encode())
                self.wfile.flush()
                return
            if state.chunk_delay and index:
                time.sleep(state.chunk_delay)
            chunk({"content": piece}, None)
            with state._lock:
                state._chunks.append((time.perf_counter(), piece))
        for index, call in enumerate(tool_calls or ()):
            chunk({"tool_calls": [{"index": index, **call}]}, None)
        chunk({}, finish_reason)
        if usage is not None:
            chunk({}, None, choices=False, usage=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _embeddings(self, body: dict[str, Any]) -> None:
        state = self.server_state
        model, inputs = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            self._error(400, "you must provide a model parameter")
            return
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and all(isinstance(i, int) for i in inputs)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            self._error(400, "'input' must be a non-empty string or array")
            return
        if len(inputs) > 2048:
            self._error(400, "'input' must have at most 2048 items")
            return
        texts = []
        for index, item in enumerate(inputs):
            if isinstance(item, list):  # token ids
                item = " ".join(str(t) for t in item)
            if not isinstance(item, str) or not item:
                self._error(400, f"'$.input[{index}]' is invalid: expected a non-empty string")
                return
            texts.append(item)
        dimension = state.dimension
        if state.honour_dimensions and body.get("dimensions") is not None:
            dimension = body["dimensions"]
            if not isinstance(dimension, int) or dimension < 1:
                self._error(400, "'dimensions' must be a positive integer")
                return
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embedding_vector(text, dimension)
            encoded: Any = base64.b64encode(struct.pack(f"<{dimension}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_count(t) for t in texts)
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def _pieces(text: str) -> Iterator[str]:
    """`text` in word-sized deltas (each word with the whitespace before it)."""
    start = 0
    for index in range(1, len(text) + 1):
        if index == len(text) or (text[index].isspace() and not text[index - 1].isspace()):
            yield text[start:index]
            start = index


try:  # pytest fixtures, when pytest is installed
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def openai_server() -> Iterator[OpenAIServer]:
        """A running `OpenAIServer` (api key "sk-test") for one test."""
        with OpenAIServer(api_key="sk-test", dimension=16) as server:
            yield server


__all__ = ["Fault", "OpenAIServer", "RecordedRequest", "Reply", "embedding_vector"]
if pytest is not None:
    __all__ += ["openai_server"]
