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
        reply.choices[0].message.content  # 'Echo: hello'
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

Dialects: `OpenAIServer(dialect="groq")` (or any name in `DIALECTS`, or a `Dialect`) speaks
another server's version of the protocol, as its documentation describes it: Azure OpenAI's
`/openai/deployments/{deployment}/chat/completions?api-version=...` paths and `api-key`
header (`dialect="azure_openai"`; `base_url` is then the resource endpoint), a 400 naming
`response_format` for `json_schema` (or for `json_schema` with tools), `parallel_tool_calls`
ignored or refused, no usage chunk in streams, a streamed tool call's arguments in one chunk
instead of many, finish reasons spelled `end_turn` / `tool_use` / `eos`, no `/embeddings`.
A scripted `{"output": {...}}` reply answers the way the request asked for structured output:
a call of the forced (or the `final_result`) tool, JSON under an honoured response format, or
JSON in a fenced block.

    with OpenAIServer(api_key="k", dialect="azure_openai") as azure:
        client = openai.AzureOpenAI(azure_endpoint=azure.base_url, api_version="2024-10-21", api_key="k")
        client.chat.completions.create(model="my-deployment", messages=[...])
        azure.chat_requests()[0].path   # '/openai/deployments/my-deployment/chat/completions'

In pytest, use the `openai_server` fixture (import it into your `conftest.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from prefect_beluga.testing._loopback import Fault, LoopbackServer, RecordedRequest
from prefect_beluga.testing._openai_dialects import DIALECTS, Dialect, dialect_of
from prefect_beluga.testing._openai_protocol import OpenAIHandler
from prefect_beluga.testing._openai_replies import Reply, Responder, check_reply, embedding_vector, text_of


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
        dialect: The server whose version of the protocol to speak: a name in `DIALECTS`
            ("openai", "azure_openai", "ollama", "vllm", "groq", "gemini", "anthropic",
            "compatible") or a `Dialect`.
        azure_ad_token: Azure dialect: a Microsoft Entra bearer token accepted instead of the key.
        deployments: Azure dialect: the deployment names that exist (None: any).
        api_versions: Azure dialect: the API versions accepted (None: any).
        host: Address to bind (loopback only).
        port: Port to bind; 0 (default) picks a free one.

    Examples:
        ```python
        import openai

        from prefect_beluga.testing import OpenAIServer

        with OpenAIServer() as server:
            server.fail_next(429, retry_after=0)
            client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=1)
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            assert len(server.requests_to("/v1/chat/completions")) == 2  # the 429, then the retry
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
        dialect: Dialect | str | None = None,
        azure_ad_token: str | None = None,
        deployments: Sequence[str] | None = None,
        api_versions: Sequence[str] | None = None,
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
        self._replies: deque[Reply] = deque(check_reply(r) for r in replies)
        if not chunk_delay >= 0:
            raise ValueError(f"chunk_delay must be seconds >= 0, got {chunk_delay!r}")
        self.chunk_delay = chunk_delay
        self.dialect = dialect_of(dialect)
        self.azure_ad_token = azure_ad_token
        self.deployments = None if deployments is None else tuple(deployments)
        self.api_versions = None if api_versions is None else tuple(api_versions)
        self._chunks: list[tuple[float, str]] = []
        self._breaks: deque[int] = deque()

    thread_name = "openai-loopback"

    @property
    def handler(self) -> type[BaseHTTPRequestHandler]:
        return OpenAIHandler

    @property
    def base_url(self) -> str:
        """The `base_url` to give the SDK: `http://127.0.0.1:<port>/v1`; for the Azure dialect,
        the resource endpoint `http://127.0.0.1:<port>` (the SDK adds `/openai/...`)."""
        return self.url if self.dialect.azure else f"{self.url}/v1"

    def chat_requests(self) -> list[RecordedRequest]:
        """The chat completion requests received, whatever the dialect's path for them."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def embedding_requests(self) -> list[RecordedRequest]:
        """The embeddings requests received, whatever the dialect's path for them."""
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    # -- scripting -------------------------------------------------------------------------

    def reply_with(self, *replies: Reply) -> None:
        """Queue chat replies, used in order (then the echo reply again).

        A reply is its text, or a dict with `content` and/or `tool_calls` (a list of
        `{"name", "arguments", "id"?}`; arguments a dict or a JSON string, sent as given).
        """
        checked = [check_reply(reply) for reply in replies]
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
        chats = self.chat_requests()
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
                return f"Echo: {text_of(message.get('content'))}"
        return "Echo: "


__all__ = ["DIALECTS", "Dialect", "Fault", "OpenAIServer", "RecordedRequest", "Reply", "embedding_vector"]
