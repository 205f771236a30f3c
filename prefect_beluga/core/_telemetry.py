"""OpenTelemetry GenAI spans and metrics: chat-model calls, embedding calls, tool executions, agent runs.

With an OpenTelemetry SDK configured the standard way (`opentelemetry-instrument`, or the
application's own `trace.set_tracer_provider(TracerProvider(...))`), each call below is a span
following the GenAI semantic conventions, and the `gen_ai.client.token.usage` and
`gen_ai.client.operation.duration` histograms are recorded through the metrics API:

    ```python
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter("http://127.0.0.1:6006/v1/traces")))
    trace.set_tracer_provider(provider)
    Chain([llm]).invoke({"input": "What is Prefect?"})   # flow run > task run > "chat gpt-4o-mini"
    ```

| operation | span name | kind | where |
| --- | --- | --- | --- |
| `chat` | `chat {model}` | CLIENT | `ChatModel` (every provider, the offline model too) |
| `embeddings` | `embeddings {model}` | CLIENT | each embedding request |
| `execute_tool` | `execute_tool {tool}` | INTERNAL | each attempt of an agent's tool call |
| `invoke_agent` | `invoke_agent {agent}` | INTERNAL | an agent's whole loop |

Why here and not by Prefect: Prefect 3 makes a span per flow run and task run when an SDK is
configured (`prefect/telemetry/run_telemetry.py`) and makes it the current span while the run's
body runs, so these spans are that span's children without this module knowing Prefect (it must
not: the AI parts never import Prefect). Chains, graphs and Map items need nothing of their own:
their steps, nodes and items are task runs, so they are Prefect's spans already.

The official OpenAI SDK instrumentation (`opentelemetry-instrumentation-openai-v2`) is used where
it fits: when it is active (`opentelemetry-instrument` enables it by itself, as the `otel`
extra installs it; or `OpenAIInstrumentor().instrument()`), a model that calls the SDK's
`chat.completions.create` (`OpenAIChatModel`, Azure's) leaves its chat span and metrics to it,
so nothing is emitted twice. Embedding requests go through the SDK's plain `post` (see
`embeddings/openai.py`), which it does not see: they are always spanned here.

Content (messages, system instructions, tool definitions, arguments and results) is recorded
only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is `true` (or `span_only` /
`span_and_event`), read at each call; API keys never (a key is not an attribute of anything
here, and a provider's key is cut out of an error's message before it is recorded).

Cost without an SDK: each entry point asks the API for the global tracer and meter providers,
finds the no-op (proxy) ones, and hands back one shared do-nothing object: ~2.5 µs a call, most
of it the API's own provider look-ups (benchmarks/otel_overhead.py, docs/performance.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode

try:  # the API's placeholder before a meter provider is set (private in the API: guarded)
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _NO_METER_PROVIDER: tuple[type, ...] = (NoOpMeterProvider, _ProxyMeterProvider)
except ImportError:  # pragma: no cover - a later API without it: record into whatever is there
    _NO_METER_PROVIDER = (NoOpMeterProvider,)
_NO_TRACER_PROVIDER = (NoOpTracerProvider, ProxyTracerProvider)

#: The instrumentation scope of every span and instrument here.
SCOPE = "prefect_beluga"
#: The semantic conventions version the attributes follow.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
#: The standard setting for recording content.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_VALUES = frozenset({"true", "1", "yes", "span_only", "span_and_event"})

#: Bucket boundaries the GenAI metrics conventions advise.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

#: Our provider names as the conventions spell them (`gen_ai.provider.name`'s well-known values).
PROVIDER_NAMES = {
    "azure_openai": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "compatible": "openai_compatible",
}

_tracer: trace.Tracer | None = None
_instruments: tuple[Any, Any] | None = None
#: The agent run a chat call belongs to (its usage is added up on the agent's span).
_agent: ContextVar[_Operation | None] = ContextVar("prefect_beluga_agent_span", default=None)


def capture_content() -> bool:
    """Whether the standard setting asks for message content on spans."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _CAPTURE_VALUES


def _active() -> tuple[bool, bool]:
    """(tracing, metrics): whether an SDK provider is set for each."""
    return (
        not isinstance(trace.get_tracer_provider(), _NO_TRACER_PROVIDER),
        not isinstance(metrics.get_meter_provider(), _NO_METER_PROVIDER),
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("prefect-beluga")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return ""


def _get_tracer() -> trace.Tracer:
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer(SCOPE, _version(), schema_url=SCHEMA_URL)
    return _tracer


def _get_instruments() -> tuple[Any, Any]:
    global _instruments
    if _instruments is None:
        meter = metrics.get_meter(SCOPE, _version(), schema_url=SCHEMA_URL)
        _instruments = (
            meter.create_histogram(
                "gen_ai.client.token.usage", unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            ),
            meter.create_histogram(
                "gen_ai.client.operation.duration", unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
        )
    return _instruments


def _openai_sdk_instrumented() -> bool:
    """Whether the official OpenAI SDK instrumentation is active in this process."""
    module = sys.modules.get("opentelemetry.instrumentation.openai_v2")
    if module is None:  # never imported, so never instrumented
        return False
    try:
        return bool(module.OpenAIInstrumentor().is_instrumented_by_opentelemetry)
    except Exception:  # noqa: BLE001 - another version's shape: emit our own spans
        return False


def error_type(exc: BaseException) -> str:
    """`error.type` for an exception: its class, qualified by module unless a builtin."""
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    public = module.split(".")[0] if module.split(".")[0] in ("openai", "httpx") else module
    return f"{public}.{cls.__qualname__}"


def provider_name(provider: str | None, server: str | None = None) -> str:
    """`gen_ai.provider.name` for a provider (and an OpenAI-compatible server preset)."""
    name = server if server and server != "openai" and provider == "openai" else provider
    name = name or "unknown"
    return PROVIDER_NAMES.get(name, name)


def _server_attributes(base_url: str | None) -> dict[str, Any]:
    if not base_url:
        return {}
    try:
        parts = urlsplit(base_url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return {}
    if not host:
        return {}
    attributes: dict[str, Any] = {"server.address": host}
    port = port or {"https": 443, "http": 80}.get(parts.scheme)
    if port:
        attributes["server.port"] = port
    return attributes


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class _Noop:
    """What every entry point hands back when no SDK is configured: does nothing, cheaply."""

    __slots__ = ()

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def chat_result(self, result: Any) -> None:
        pass

    def embeddings_result(self, input_tokens: int | None = None) -> None:
        pass

    def tool_result(self, value: Any) -> None:
        pass


_NOOP = _Noop()


class _Operation(_Noop):
    """One GenAI operation: a span (when tracing) and its metrics (when metering)."""

    __slots__ = (
        "_attach", "_attributes", "_kind", "_metric_attributes", "_metering", "_name", "_secret", "_span",
        "_start", "_token", "_tokens", "_tracing", "_usage",
    )

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        *,
        tracing: bool,
        metering: bool,
        metric_keys: Iterable[str] = (),
        attach: bool = True,
        secret: str | None = None,
    ) -> None:
        self._name, self._kind, self._attributes = name, kind, attributes
        self._tracing, self._metering, self._attach = tracing, metering, attach
        self._metric_attributes = {k: attributes[k] for k in metric_keys if k in attributes}
        self._secret = secret
        self._span: Any = None
        self._token: Any = None
        self._tokens: tuple[int | None, int | None] = (None, None)
        self._usage = [0, 0]  # tokens of the chat calls inside an agent run
        self._start = 0.0

    def __enter__(self) -> _Operation:
        if self._tracing:
            self._span = _get_tracer().start_span(self._name, kind=self._kind, attributes=self._attributes)
            if self._attach:
                self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        duration = time.perf_counter() - self._start
        if isinstance(exc, GeneratorExit):  # a stream its reader stopped reading: not an error
            exc = None
        kind = error_type(exc) if exc is not None else None
        span = self._span
        if span is not None:
            if self._attributes.get("gen_ai.operation.name") == "invoke_agent" and any(self._usage):
                span.set_attribute("gen_ai.usage.input_tokens", self._usage[0])
                span.set_attribute("gen_ai.usage.output_tokens", self._usage[1])
            if exc is not None:
                message = self._scrub(str(exc))
                span.set_attribute("error.type", kind)
                span.add_event("exception", {
                    "exception.type": kind,
                    "exception.message": message,
                    "exception.stacktrace": self._scrub("".join(traceback.format_exception(exc))),
                })
                span.set_status(Status(StatusCode.ERROR, message[:500] or kind))
            span.end()
            if self._token is not None:
                try:
                    otel_context.detach(self._token)
                except Exception:  # noqa: BLE001 - detached from another context: nothing to undo
                    pass
        if self._metering:
            token_usage, duration_histogram = _get_instruments()
            attributes = self._metric_attributes
            if kind is not None:
                attributes = {**attributes, "error.type": kind}
            duration_histogram.record(duration, attributes)
            for count, token_type in zip(self._tokens, ("input", "output"), strict=True):
                if count is not None:
                    token_usage.record(count, {**attributes, "gen_ai.token.type": token_type})
        return None

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[REDACTED]") if self._secret else text

    def _set(self, key: str, value: Any) -> None:
        if self._span is not None and value is not None:
            self._span.set_attribute(key, value)

    # -- results ----------------------------------------------------------------------------------

    def chat_result(self, result: Any) -> None:
        """Record a ChatResult: response model, finish reason, usage, and the reply when capturing."""
        usage = getattr(result, "usage", None)
        input_tokens = getattr(usage, "prompt_tokens", None)
        output_tokens = getattr(usage, "completion_tokens", None)
        agent = _agent.get()
        if agent is not None and agent is not self:
            agent._usage[0] += input_tokens or 0
            agent._usage[1] += output_tokens or 0
        if not (self._tracing or self._metering):
            return  # deferred to the OpenAI SDK instrumentation: only the agent's sum above
        model = getattr(result, "model", None) or None
        if model:
            self._metric_attributes["gen_ai.response.model"] = model
        self._tokens = (input_tokens, output_tokens)
        if self._span is None:
            return
        finish = getattr(result, "finish_reason", None)
        self._set("gen_ai.response.model", model)
        self._set("gen_ai.usage.input_tokens", input_tokens)
        self._set("gen_ai.usage.output_tokens", output_tokens)
        if getattr(usage, "estimated", False):
            self._set("prefect_beluga.usage.estimated", True)
        if finish:
            self._set("gen_ai.response.finish_reasons", (finish,))
        if capture_content():
            message = getattr(result, "message", None)
            if message is not None:
                output = _message_json(message)
                output["finish_reason"] = finish or "stop"
                self._set("gen_ai.output.messages", _json([output]))

    def embeddings_result(self, input_tokens: int | None = None) -> None:
        """Record an embedding response: the input tokens it reports, if any."""
        self._tokens = (input_tokens, None)
        self._set("gen_ai.usage.input_tokens", input_tokens)

    def tool_result(self, value: Any) -> None:
        """Record what a tool returned (only when capturing content)."""
        if self._span is not None and capture_content():
            self._set("gen_ai.tool.call.result", value if isinstance(value, str) else _json(value))


class _Deferred(_Noop):
    """A chat call whose span and metrics the OpenAI SDK instrumentation makes: only the agent's
    usage sum is kept here."""

    __slots__ = ()

    def chat_result(self, result: Any) -> None:
        agent = _agent.get()
        usage = getattr(result, "usage", None)
        if agent is not None and usage is not None:
            agent._usage[0] += getattr(usage, "prompt_tokens", 0) or 0
            agent._usage[1] += getattr(usage, "completion_tokens", 0) or 0


_DEFERRED = _Deferred()


# -- content ----------------------------------------------------------------------------------------


def _arguments(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return text


def _message_json(message: Any) -> dict[str, Any]:
    """One message in the conventions' form: `{"role", "parts": [...]}`."""
    role = getattr(message, "role", "user")
    content = getattr(message, "content", "") or ""
    parts: list[dict[str, Any]] = []
    if role == "tool":
        parts.append({"type": "tool_call_response", "id": getattr(message, "tool_call_id", None),
                      "response": content})
    elif content:
        parts.append({"type": "text", "content": content})
    for call in getattr(message, "tool_calls", ()) or ():
        parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": _arguments(call.arguments)})
    return {"role": role, "parts": parts}


def _content_attributes(messages: Iterable[Any], request: Mapping[str, Any]) -> dict[str, Any]:
    system = [{"type": "text", "content": m.content} for m in messages if getattr(m, "role", None) == "system"]
    others = [_message_json(m) for m in messages if getattr(m, "role", None) != "system"]
    attributes: dict[str, Any] = {"gen_ai.input.messages": _json(others)}
    if system:
        attributes["gen_ai.system_instructions"] = _json(system)
    if request.get("tools"):
        attributes["gen_ai.tool.definitions"] = _json(request["tools"])
    return attributes


# -- entry points -------------------------------------------------------------------------------


def _model_attributes(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    server = getattr(getattr(model, "server", None), "name", None)
    provider = provider_name(getattr(config, "provider", None), server)
    attributes: dict[str, Any] = {
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the older name, for backends on conventions before 1.37
        "gen_ai.request.model": getattr(config, "model_name", None) or getattr(model, "model_name", "unknown"),
    }
    attributes.update(_server_attributes(getattr(model, "_base_url", None) or getattr(config, "base_url", None)))
    return attributes


_CHAT_METRIC_KEYS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                     "server.address", "server.port")


def _secret_of(model: Any) -> str | None:
    key = getattr(model, "_api_key", None)
    value = key.get_secret_value() if hasattr(key, "get_secret_value") else key
    return value if isinstance(value, str) and len(value) >= 4 else None


def chat_call(model: Any, messages: Iterable[Any], request: Mapping[str, Any], *, attach: bool = True) -> Any:
    """A context manager around one chat-model call: a `chat {model}` span and its metrics.

    `model` is a `ChatModel` (read for its provider, model name, server and settings);
    call `.chat_result(result)` on what it returns with the ChatResult. `attach=False` leaves
    the span out of the current context (for async generators, whose context can change).
    """
    tracing, metering = _active()
    if not (tracing or metering):
        return _NOOP
    if getattr(model, "_chat_via_openai_sdk", False) and _openai_sdk_instrumented():
        return _DEFERRED
    attributes = {"gen_ai.operation.name": "chat", **_model_attributes(model)}
    config = getattr(model, "config", None)
    for key, value in (("gen_ai.request.temperature", getattr(config, "temperature", None)),
                       ("gen_ai.request.max_tokens", getattr(config, "max_tokens", None))):
        if value is not None:
            attributes[key] = value
    response_format = request.get("response_format")
    if isinstance(response_format, Mapping):
        attributes["gen_ai.output.type"] = "json"
    if tracing and capture_content():
        attributes.update(_content_attributes(list(messages), request))
    return _Operation(
        f"chat {attributes['gen_ai.request.model']}", SpanKind.CLIENT, attributes,
        tracing=tracing, metering=metering, metric_keys=_CHAT_METRIC_KEYS, attach=attach,
        secret=_secret_of(model),
    )


def embeddings_call(
    *,
    provider: str | None,
    model: str,
    inputs: int,
    dimension: int | None = None,
    base_url: str | None = None,
    server: str | None = None,
    secret: Any = None,
) -> Any:
    """A context manager around one embedding request: an `embeddings {model}` span and metrics;
    call `.embeddings_result(input_tokens)` on it when the response reports usage."""
    tracing, metering = _active()
    if not (tracing or metering):
        return _NOOP
    name = provider_name(provider, server)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": name,
        "gen_ai.system": name,
        "gen_ai.request.model": model,
        "prefect_beluga.embeddings.input_count": inputs,
        **_server_attributes(base_url),
    }
    if dimension is not None:
        attributes["gen_ai.embeddings.dimension.count"] = dimension
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    return _Operation(
        f"embeddings {model}", SpanKind.CLIENT, attributes, tracing=tracing, metering=metering,
        metric_keys=_CHAT_METRIC_KEYS, secret=value if isinstance(value, str) and len(value) >= 4 else None,
    )


def tool_call(name: str, call_id: str | None, arguments: Any = None, *, description: str | None = None) -> Any:
    """A context manager around one tool execution: an `execute_tool {name}` span (no metrics:
    the conventions define none for tools); `.tool_result(value)` records the result when
    capturing content."""
    tracing, _ = _active()
    if not tracing:
        return _NOOP
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.type": "function",
    }
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    if description:
        attributes["gen_ai.tool.description"] = description
    if arguments is not None and capture_content():
        attributes["gen_ai.tool.call.arguments"] = _json(arguments)
    return _Operation(f"execute_tool {name}", SpanKind.INTERNAL, attributes, tracing=True, metering=False)


class _AgentRun(_Operation):
    __slots__ = ("_previous",)

    def __enter__(self) -> _AgentRun:
        super().__enter__()
        self._previous = _agent.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            _agent.reset(self._previous)
        except ValueError:  # reset from another context
            _agent.set(None)
        return super().__exit__(exc_type, exc, tb)


def agent_run(name: str, model: Any) -> Any:
    """A context manager around an agent's loop: an `invoke_agent {name}` span, with the tokens
    of the chat calls inside it added up."""
    tracing, _ = _active()
    if not tracing:
        return _NOOP
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": name,
        **{k: v for k, v in _model_attributes(model).items() if not k.startswith("server.")},
    }
    return _AgentRun(f"invoke_agent {name}", SpanKind.INTERNAL, attributes, tracing=True, metering=False)


__all__ = [
    "CAPTURE_CONTENT_ENV",
    "SCOPE",
    "agent_run",
    "capture_content",
    "chat_call",
    "embeddings_call",
    "error_type",
    "provider_name",
    "tool_call",
]
