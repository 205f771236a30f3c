"""One GenAI operation as OpenTelemetry sees it: its span (when a tracer provider is set) and its
`gen_ai.client.*` histograms (when a meter provider is set), or a shared do-nothing object when
neither is; the error and the usage recorded on it, an API key cut out of what is recorded."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode

from prefect_beluga.core._telemetry_content import capture_content, message_json, to_json

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
#: Bucket boundaries the GenAI metrics conventions advise.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

_tracer: trace.Tracer | None = None
_instruments: tuple[Any, Any] | None = None
#: The agent run a chat call belongs to (its usage is added up on the agent's span).
_agent: ContextVar[Operation | None] = ContextVar("prefect_beluga_agent_span", default=None)


def active() -> tuple[bool, bool]:
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


def error_type(exc: BaseException) -> str:
    """`error.type` for an exception: its class, qualified by module unless a builtin."""
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    public = module.split(".")[0] if module.split(".")[0] in ("openai", "httpx") else module
    return f"{public}.{cls.__qualname__}"


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


class Operation(_Noop):
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

    def __enter__(self) -> Operation:
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
                output = message_json(message)
                output["finish_reason"] = finish or "stop"
                self._set("gen_ai.output.messages", to_json([output]))

    def embeddings_result(self, input_tokens: int | None = None) -> None:
        """Record an embedding response: the input tokens it reports, if any."""
        self._tokens = (input_tokens, None)
        self._set("gen_ai.usage.input_tokens", input_tokens)

    def tool_result(self, value: Any) -> None:
        """Record what a tool returned (only when capturing content)."""
        if self._span is not None and capture_content():
            self._set("gen_ai.tool.call.result", value if isinstance(value, str) else to_json(value))


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


class AgentRun(Operation):
    __slots__ = ("_previous",)

    def __enter__(self) -> AgentRun:
        super().__enter__()
        self._previous = _agent.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            _agent.reset(self._previous)
        except ValueError:  # reset from another context
            _agent.set(None)
        return super().__exit__(exc_type, exc, tb)
