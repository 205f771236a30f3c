"""The OpenAI wire protocol of the loopback server: request handling, replies, SSE streams.

`OpenAIServer` (in `openai_server.py`) holds the state; the handler here answers each request
from it, as OpenAI's `/v1/chat/completions`, `/v1/embeddings` and `/v1/models` would.
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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prefect_beluga.testing._loopback import Fault, LoopbackHandler, RecordedRequest

if TYPE_CHECKING:
    from prefect_beluga.testing.openai_server import OpenAIServer

__all__ = ["Reply", "Responder", "check_reply", "embedding_vector", "text_of"]

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


def check_reply(reply: Any) -> Reply:
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


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _count(text: str) -> int:
    from prefect_beluga.tokens import count_tokens

    return count_tokens(text)


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return 3 + sum(3 + _count(text_of(m.get("content"))) for m in messages if isinstance(m, dict))


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
