"""OpenTelemetry GenAI spans and metrics: chat-model calls, embedding calls, tool executions, agent runs.

With an OpenTelemetry SDK configured the standard way (`opentelemetry-instrument`, or the
application's own `trace.set_tracer_provider(TracerProvider(...))`), each call below is a span
following the GenAI semantic conventions, and the `gen_ai.client.token.usage` and
`gen_ai.client.operation.duration` histograms are recorded through the metrics API:

    ```python
    # example: not run (needs an OTLP collector on 127.0.0.1:6006; sets the process's tracer provider)
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from prefect_beluga import Chain
    from prefect_beluga.llms import OpenAIChatModel

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter("http://127.0.0.1:6006/v1/traces")))
    trace.set_tracer_provider(provider)
    llm = OpenAIChatModel(model_name="gpt-4o-mini")  # or the offline model: no key needed
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

import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind

from prefect_beluga.core._telemetry_content import capture_content, content_attributes, to_json
from prefect_beluga.core._telemetry_operation import _DEFERRED, _NOOP, AgentRun, Operation, active

#: Our provider names as the conventions spell them (`gen_ai.provider.name`'s well-known values).
PROVIDER_NAMES = {
    "azure_openai": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "compatible": "openai_compatible",
}


def _openai_sdk_instrumented() -> bool:
    """Whether the official OpenAI SDK instrumentation is active in this process."""
    module = sys.modules.get("opentelemetry.instrumentation.openai_v2")
    if module is None:  # never imported, so never instrumented
        return False
    try:
        return bool(module.OpenAIInstrumentor().is_instrumented_by_opentelemetry)
    except Exception:  # noqa: BLE001 - another version's shape: emit our own spans
        return False


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


# -- entry points -------------------------------------------------------------------------------


def chat_call(model: Any, messages: Iterable[Any], request: Mapping[str, Any], *, attach: bool = True) -> Any:
    """A context manager around one chat-model call: a `chat {model}` span and its metrics.

    `model` is a `ChatModel` (read for its provider, model name, server and settings);
    call `.chat_result(result)` on what it returns with the ChatResult. `attach=False` leaves
    the span out of the current context (for async generators, whose context can change).
    """
    tracing, metering = active()
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
        attributes.update(content_attributes(list(messages), request))
    return Operation(
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
    tracing, metering = active()
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
    return Operation(
        f"embeddings {model}", SpanKind.CLIENT, attributes, tracing=tracing, metering=metering,
        metric_keys=_CHAT_METRIC_KEYS, secret=value if isinstance(value, str) and len(value) >= 4 else None,
    )


def tool_call(name: str, call_id: str | None, arguments: Any = None, *, description: str | None = None) -> Any:
    """A context manager around one tool execution: an `execute_tool {name}` span (no metrics:
    the conventions define none for tools); `.tool_result(value)` records the result when
    capturing content."""
    tracing, _ = active()
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
        attributes["gen_ai.tool.call.arguments"] = to_json(arguments)
    return Operation(f"execute_tool {name}", SpanKind.INTERNAL, attributes, tracing=True, metering=False)


def agent_run(name: str, model: Any) -> Any:
    """A context manager around an agent's loop: an `invoke_agent {name}` span, with the tokens
    of the chat calls inside it added up."""
    tracing, _ = active()
    if not tracing:
        return _NOOP
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": name,
        **{k: v for k, v in _model_attributes(model).items() if not k.startswith("server.")},
    }
    return AgentRun(f"invoke_agent {name}", SpanKind.INTERNAL, attributes, tracing=True, metering=False)


__all__ = ["agent_run", "chat_call", "embeddings_call", "tool_call"]
