"""The OpenAI wire protocol of the loopback server: request handling, errors, SSE streams.

`OpenAIServer` (in `openai_server.py`) holds the state; the handler here answers each request
from it (`OpenAIState`: what it reads), as OpenAI's `/v1/chat/completions`, `/v1/embeddings` and
`/v1/models` would, or as another server's dialect of them does (`_openai_dialects.py`): Azure's
deployment paths, `api-version` query and `api-key` header; a server that rejects `json_schema`,
ignores `parallel_tool_calls`, never reports usage in a stream, sends a tool call's arguments in
one chunk, or spells finish reasons its own way.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

from prefect_beluga.testing._loopback import Fault, LoopbackHandler, RecordedRequest
from prefect_beluga.testing._openai_dialects import Dialect
from prefect_beluga.testing._openai_replies import (
    Reply,
    embedding_vector,
    prompt_tokens,
    split_reply,
    structured,
    token_count,
)

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


def _mask(key: str) -> str:
    """How OpenAI shows a wrong key in its 401 message: all but the last 4 characters hidden."""
    return f"{key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}" if len(key) > 8 else "****"


class OpenAIState(Protocol):
    """What the handler reads of the `OpenAIServer` it answers for."""

    api_key: str | None
    dimension: int
    honour_dimensions: bool
    chunk_delay: float
    dialect: Dialect
    azure_ad_token: str | None
    deployments: tuple[str, ...] | None
    api_versions: tuple[str, ...] | None
    _lock: threading.Lock
    _breaks: deque[int]
    _chunks: list[tuple[float, str]]

    def _chat_reply(self, messages: list[dict[str, Any]]) -> Reply: ...

    def _wait(self, seconds: float) -> None: ...


class OpenAIHandler(LoopbackHandler):
    """Answers one connection's requests as the OpenAI-compatible server `server_state` describes."""

    server_state: OpenAIState  # an OpenAIServer
    server_version = "openai-loopback/1.0"

    # -- plumbing --------------------------------------------------------------------------

    def _respond(self, request: RecordedRequest, fault: Fault | None) -> None:
        state = self.server_state
        method, path, headers, body = request.method, request.path, request.headers, request.body
        dialect = state.dialect
        if fault is not None and self._apply(fault):
            return
        if dialect.azure:
            self._respond_azure(request)
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
            ("POST", "/v1/embeddings"): self._embeddings if dialect.embeddings else None,
            ("GET", "/v1/models"): self._models,
        }.get((method, path))
        if route is None:
            self._error(404, f"Invalid URL ({method} {path})")
            return
        if method == "POST" and not isinstance(body, dict):
            self._error(400, "We could not parse the JSON body of your request.")
            return
        route(body)

    def _respond_azure(self, request: RecordedRequest) -> None:
        """Azure OpenAI: `/openai/deployments/{deployment}/{chat/completions|embeddings}?api-version=`."""
        state = self.server_state
        headers, body = request.headers, request.body
        key_ok = state.api_key is None or headers.get("api-key") == state.api_key
        token_ok = state.azure_ad_token is not None and headers.get("authorization") == f"Bearer {state.azure_ad_token}"
        if not (key_ok and ("api-key" in headers or state.api_key is None)) and not token_ok:
            self._azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                              "Make sure to provide a valid key for an active subscription and use a correct "
                              "regional API endpoint for your resource.")
            return
        parts = request.path.strip("/").split("/")
        if len(parts) < 4 or parts[:2] != ["openai", "deployments"] or request.method != "POST":
            self._azure_error(404, "404", "Resource not found")
            return
        deployment, operation = parts[2], "/".join(parts[3:])
        query = dict(pair.split("=", 1) for pair in request.query.split("&") if "=" in pair)
        version = query.get("api-version")
        if not version:
            self._azure_error(404, "404", "Resource not found")
            return
        if state.api_versions is not None and version not in state.api_versions:
            self._azure_error(404, "404", "Resource not found")
            return
        if state.deployments is not None and deployment not in state.deployments:
            self._azure_error(404, "DeploymentNotFound", "The API deployment for this resource does not exist. "
                              "If you created the deployment within the last 5 minutes, please wait a moment "
                              "and try again.")
            return
        route = {"chat/completions": self._chat, "embeddings": self._embeddings}.get(operation)
        if route is None:
            self._azure_error(404, "404", "Resource not found")
            return
        if not isinstance(body, dict):
            self._error(400, "We could not parse the JSON body of your request.")
            return
        route({**body, "model": body.get("model") or deployment})

    def _azure_error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": {"code": code, "message": message}})

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
        if self._refused(body):
            return
        dialect = state.dialect
        scripted = state._chat_reply(messages)
        if isinstance(scripted, dict) and "output" in scripted:
            scripted = structured(scripted, body, dialect)
        reply, tool_calls = split_reply(scripted)
        if tool_calls and body.get("parallel_tool_calls") is False and dialect.parallel_tool_calls == "honour":
            tool_calls = tool_calls[:1]
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        finish_reason = "tool_calls" if tool_calls else "stop"
        if isinstance(max_tokens, int) and max_tokens > 0:
            from prefect_beluga.tokens import count_tokens, truncate

            if count_tokens(reply) > max_tokens:
                reply, finish_reason = truncate(reply, max_tokens), "length"
        prompt = prompt_tokens(messages)
        completion = token_count(reply)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        finish_reason = dialect.finish_reasons.get(finish_reason, finish_reason)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            include_usage = include_usage and dialect.stream_options == "honour"
            self._stream(
                completion_id, created, model, reply, finish_reason, usage if include_usage else None, tool_calls,
                full_usage=usage,
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

    def _refused(self, body: dict[str, Any]) -> bool:
        """Answer a 400 naming the field, as this dialect's server would; True if it did."""
        dialect = self.server_state.dialect
        response_format = body.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        problem = None
        named = [i for i, m in enumerate(body.get("messages") or ()) if isinstance(m, dict) and "name" in m]
        for name in dialect.rejected_fields:
            if name in body:
                problem = (name, f"'{name}' is not supported by this server")
                break
        else:
            if named and not dialect.message_names:
                problem = (f"messages[{named[0]}].name", f"'messages.{named[0]}' : property 'name' is unsupported")
            elif kind == "json_schema" and dialect.json_schema == "reject":
                problem = ("response_format", "Invalid value for 'response_format.type': 'json_schema' is not "
                           "supported")
            elif kind == "json_object" and dialect.json_object == "reject":
                problem = ("response_format", "Invalid value for 'response_format.type': 'json_object' is not "
                           "supported")
            elif kind == "json_schema" and body.get("tools") and not dialect.json_schema_with_tools:
                problem = ("response_format", "'response_format' json_schema cannot be combined with 'tools': "
                           "tool use is not supported with structured outputs")
            else:
                for name, treatment in (("parallel_tool_calls", dialect.parallel_tool_calls),
                                        ("tool_choice", dialect.tool_choice),
                                        ("stream_options", dialect.stream_options),
                                        ("seed", dialect.seed)):
                    if treatment == "reject" and name in body:
                        problem = (name, f"Unrecognized request argument supplied: {name}")
                        break
        if problem is None:
            return False
        param, message = problem
        self._json(400, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": "unsupported_parameter"}})
        return True

    def _stream(
        self,
        completion_id: str,
        created: int,
        model: str,
        reply: str,
        finish_reason: str,
        usage: dict[str, int] | None,
        tool_calls: list[dict[str, Any]] | None = None,
        full_usage: dict[str, int] | None = None,
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
        dialect = state.dialect
        if dialect.azure:  # Azure's first chunk: the prompt's content filter results, no choices
            chunk({}, None, choices=False, prompt_filter_results=[
                {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}])
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
            if dialect.tool_call_chunks == "one":
                chunk({"tool_calls": [{"index": index, **call}]}, None)
                continue
            arguments = call["function"]["arguments"]
            head = {"index": index, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}
            chunk({"tool_calls": [head]}, None)
            for start in range(0, len(arguments), 7):
                chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[start:start + 7]}}]}, None)
        if dialect.usage_extension:
            chunk({}, finish_reason, **{dialect.usage_extension: {"id": f"req_{completion_id[-12:]}",
                                                                 "usage": full_usage}})
        else:
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
        tokens = sum(token_count(t) for t in texts)
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
