"""OpenTelemetry GenAI spans and metrics (prefect_beluga/core/_telemetry.py), read back from the
SDK: the in-memory span exporter and metric reader, and an OTLP/HTTP export under
`opentelemetry-instrument` to the loopback receiver (`prefect_beluga.testing.otlp_receiver`).

The global tracer and meter providers can be set once per process: this module sets one SDK
provider of each at import and clears the exporter before each test; the OTLP export runs in a
subprocess of its own, where `opentelemetry-instrument` also turns on the official OpenAI SDK
instrumentation (in the `otel` extra), whose chat spans then replace ours: checked not doubled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prefect.settings import PREFECT_API_URL

from prefect_beluga import Chain, llms
from prefect_beluga.agents import Agent
from prefect_beluga.embeddings import OpenAIEmbedder
from prefect_beluga.testing.otlp_receiver import OTLPReceiver
from prefect_beluga.tools import tool

EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))

KEY = "sk-test"  # the openai_server fixture's key


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    EXPORTER.clear()
    READER.get_metrics_data()  # drop what earlier tests recorded (cumulative: read as deltas below)
    yield


@tool
def add(a: int, b: int = 0) -> int:
    """Add two integers."""
    return a + b


def spans_named(prefix: str):
    return [s for s in EXPORTER.get_finished_spans() if s.name.startswith(prefix)]


def by_id(span_id: int):
    return next((s for s in EXPORTER.get_finished_spans() if s.context.span_id == span_id), None)


def everything(span) -> str:
    """All a span carries, as text: attributes, events and their attributes, status."""
    parts = [span.name, json.dumps(dict(span.attributes), default=str), str(span.status.description)]
    for event in span.events:
        parts += [event.name, json.dumps(dict(event.attributes), default=str)]
    return "\n".join(parts)


def chat_model(server, key: str = KEY) -> llms.OpenAIChatModel:
    return llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key=key, base_url=server.base_url))


def test_chain_chat_span_is_a_child_of_prefect_task_span():
    llm = llms.Factory().create_provider("offline", llms.Config(provider="offline"))
    Chain([llm]).invoke({"input": "What is Prefect?"})
    [chat] = spans_named("chat ")
    attributes = dict(chat.attributes)
    assert chat.kind == trace.SpanKind.CLIENT and chat.instrumentation_scope.name == "prefect_beluga"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "offline"
    assert attributes["gen_ai.request.model"] == chat.name.split(" ", 1)[1]
    assert attributes["gen_ai.response.model"] and attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0 and attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "gen_ai.input.messages" not in attributes and "gen_ai.output.messages" not in attributes
    task = by_id(chat.parent.span_id)
    assert task is not None and task.attributes["prefect.run.type"] == "task"
    flow = by_id(task.parent.span_id)
    assert flow is not None and flow.attributes["prefect.run.type"] == "flow" and flow.parent is None
    assert chat.context.trace_id == task.context.trace_id == flow.context.trace_id


def test_agent_spans_model_and_tool_calls_without_the_key(openai_server):
    openai_server.reply_with({"tool_calls": [{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 40}}]},
                             "2 + 40 = 42.")
    agent = Agent(chat_model(openai_server), tools=[add], name="adder")
    assert agent.invoke("What is 2 + 40?")["output"] == "2 + 40 = 42."
    [run] = spans_named("invoke_agent ")
    chats = sorted(spans_named("chat "), key=lambda s: s.start_time)
    [tool_span] = spans_named("execute_tool ")
    assert run.name == "invoke_agent adder" and run.attributes["gen_ai.agent.name"] == "adder"
    assert len(chats) == 2 and chats[0].attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert chats[1].attributes["gen_ai.response.finish_reasons"] == ("stop",)
    for chat in chats:
        assert chat.attributes["gen_ai.provider.name"] == "openai"
        assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert chat.attributes["server.address"] == "127.0.0.1"
        assert by_id(chat.parent.span_id).attributes["prefect.run.type"] == "task"
    assert tool_span.attributes["gen_ai.tool.name"] == "add" and tool_span.attributes["gen_ai.tool.call.id"] == "call_1"
    assert "gen_ai.tool.call.arguments" not in tool_span.attributes
    assert by_id(tool_span.parent.span_id).attributes["prefect.run.name"].startswith("add")
    total_in = sum(c.attributes["gen_ai.usage.input_tokens"] for c in chats)
    assert run.attributes["gen_ai.usage.input_tokens"] == total_in
    flow = by_id(run.parent.span_id)
    assert flow.attributes["prefect.run.type"] == "flow" and flow.context.trace_id == chats[0].context.trace_id
    for span in EXPORTER.get_finished_spans():
        assert KEY not in everything(span), span.name


def test_content_only_when_the_capture_setting_is_on(openai_server, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    openai_server.reply_with({"tool_calls": [{"id": "call_7", "name": "add", "arguments": {"a": 1, "b": 2}}]}, "3.")
    Agent(chat_model(openai_server), tools=[add], system_prompt="Use the tools.").invoke("What is 1 + 2?")
    first, second = sorted(spans_named("chat "), key=lambda s: s.start_time)
    assert json.loads(first.attributes["gen_ai.system_instructions"]) == [{"type": "text", "content": "Use the tools."}]
    assert json.loads(first.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is 1 + 2?"}]}]
    assert json.loads(first.attributes["gen_ai.tool.definitions"])[0]["function"]["name"] == "add"
    output = json.loads(first.attributes["gen_ai.output.messages"])
    assert output[0]["parts"] == [{"type": "tool_call", "id": "call_7", "name": "add", "arguments": {"a": 1, "b": 2}}]
    assert json.loads(second.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "3."
    [tool_span] = spans_named("execute_tool ")
    assert json.loads(tool_span.attributes["gen_ai.tool.call.arguments"]) == {"a": 1, "b": 2}
    assert tool_span.attributes["gen_ai.tool.call.result"] == "3"
    for span in EXPORTER.get_finished_spans():
        assert KEY not in everything(span)


def test_a_failed_call_has_error_type_and_no_key(openai_server):
    secret = "sk-otel-secret-0123456789"
    openai_server.api_key = None  # any key accepted; the fault below echoes it as OpenAI's 401 does
    openai_server.fail_next(401, body={"error": {"message": f"Incorrect API key provided: {secret}.",
                                                 "type": "invalid_request_error", "code": "invalid_api_key"}})
    with pytest.raises(Exception):  # noqa: B017 - the SDK's AuthenticationError
        chat_model(openai_server, key=secret).generate("Hi")
    [chat] = spans_named("chat ")
    assert chat.attributes["error.type"] == "openai.AuthenticationError"
    assert chat.status.status_code == trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in chat.events)
    assert secret not in everything(chat)


def test_embedding_spans(openai_server):
    embedder = OpenAIEmbedder("text-embedding-3-small", api_key=KEY, base_url=openai_server.base_url, dimension=16)
    assert len(embedder.embed_documents(["a", "b", "c"])) == 3
    [span] = spans_named("embeddings ")
    assert span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["gen_ai.request.model"] == "text-embedding-3-small"
    assert span.attributes["gen_ai.embeddings.dimension.count"] == 16
    assert KEY not in everything(span)


def _points(name: str):
    data = READER.get_metrics_data()
    found = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "prefect_beluga":
                continue
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def test_metrics_token_usage_and_duration():
    llm = llms.Factory().create_provider("offline", llms.Config(provider="offline"))
    before = {p.attributes.get("gen_ai.token.type"): p.sum for p in _points("gen_ai.client.token.usage")
              if p.attributes.get("gen_ai.provider.name") == "offline"}
    result = llm.generate("What is Prefect?")
    points = [p for p in _points("gen_ai.client.token.usage") if p.attributes.get("gen_ai.provider.name") == "offline"]
    sums = {p.attributes["gen_ai.token.type"]: p.sum for p in points}
    assert sums["input"] - before.get("input", 0) == result.usage.prompt_tokens
    assert sums["output"] - before.get("output", 0) == result.usage.completion_tokens
    assert all(p.attributes["gen_ai.operation.name"] == "chat" for p in points)
    durations = [p for p in _points("gen_ai.client.operation.duration")
                 if p.attributes.get("gen_ai.provider.name") == "offline"]
    assert durations and durations[0].count >= 1 and durations[0].explicit_bounds[0] == 0.01


SCRIPT = textwrap.dedent("""
    from prefect_beluga import Chain, llms
    from prefect_beluga.agents import Agent
    from prefect_beluga.testing import OpenAIServer
    from prefect_beluga.tools import tool

    @tool
    def add(a: int, b: int = 0) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b

    with OpenAIServer(api_key="sk-test") as server:
        server.reply_with({"tool_calls": [{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 40}}]}, "42.")
        llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key="sk-test", base_url=server.base_url))
        Agent(llm, tools=[add], name="adder").invoke("What is 2 + 40?")
    Chain([llms.Factory().create_provider("offline", llms.Config(provider="offline"))]).invoke({"input": "Hi"})
""")


def test_otlp_http_export_under_opentelemetry_instrument(tmp_path):
    script = tmp_path / "traced.py"
    script.write_text(SCRIPT)
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    with OTLPReceiver() as receiver:
        env = {
            **os.environ,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "OTEL_SERVICE_NAME": "beluga-otel-test",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.traces_url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        done = subprocess.run([instrument, sys.executable, str(script)], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        spans = receiver.spans()
    assert receiver.bodies, "nothing was exported"
    assert {s["resource"].get("service.name") for s in spans} == {"beluga-otel-test"}
    by_span = {s["span_id"]: s for s in spans}
    ours = [s for s in spans if s["scope"] == "prefect_beluga"]
    official = [s for s in spans if s["scope"].startswith("opentelemetry.instrumentation.openai_v2")]
    chats = [s for s in [*ours, *official] if s["attributes"].get("gen_ai.operation.name") == "chat"]
    # One chat span per request: the OpenAI model's two are the official instrumentation's
    # (opentelemetry-instrument turned it on), ours stood back; the offline model's is ours.
    assert sorted(s["attributes"].get("gen_ai.provider.name") or s["attributes"]["gen_ai.system"]
                  for s in chats) == ["offline", "openai", "openai"]
    assert len(official) == 2 and all(s["attributes"]["gen_ai.request.model"] == "gpt-4o-mini" for s in official)
    assert [s["attributes"]["gen_ai.provider.name"] for s in ours if s in chats] == ["offline"]
    assert {s["name"] for s in ours} >= {"invoke_agent adder", "execute_tool add"}
    for span in [*chats, *[s for s in ours if s["name"].startswith("execute_tool")]]:
        parent = by_span[span["parent_span_id"]]
        assert parent["attributes"]["prefect.run.type"] == "task", (span["name"], parent["name"])
        ancestors = []
        while parent.get("parent_span_id") in by_span:
            parent = by_span[parent["parent_span_id"]]
            ancestors.append(parent["attributes"].get("prefect.run.type") or parent["name"])
        assert "flow" in ancestors, (span["name"], ancestors)
    assert all(b"sk-test" not in body for body in receiver.bodies)


METRICS_SCRIPT = textwrap.dedent("""
    import json
    from prefect_beluga import llms

    llm = llms.Factory().create_provider("offline", llms.Config(provider="offline"))
    usage = [llm.generate(question).usage for question in ("What is Prefect?", "And a flow run?")]
    print(json.dumps({"input": sum(u.prompt_tokens for u in usage), "output": sum(u.completion_tokens for u in usage)}))
""")


def test_otlp_http_metrics_export_under_opentelemetry_instrument(tmp_path):
    """The token-usage and duration histograms as the OTLP/HTTP metric exporter sends them
    (`OTEL_METRICS_EXPORTER=otlp`), decoded from the protobuf by the loopback receiver."""
    script = tmp_path / "metered.py"
    script.write_text(METRICS_SCRIPT)
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    with OTLPReceiver() as receiver:
        env = {
            **os.environ,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "OTEL_SERVICE_NAME": "beluga-metrics-test",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.metrics_url,
            "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # the export at shutdown is the one checked
        }
        done = subprocess.run([instrument, sys.executable, str(script)], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        exported = receiver.metrics()
    expected = json.loads(done.stdout.strip().splitlines()[-1])
    assert receiver.bodies, "nothing was exported"
    ours = [m for m in exported if m["scope"] == "prefect_beluga"]
    assert {m["resource"].get("service.name") for m in ours} == {"beluga-metrics-test"}
    by_name: dict[str, list[dict]] = {}
    for metric in ours:  # cumulative: the last export holds the totals
        by_name[metric["name"]] = metric["points"]
    tokens, durations = by_name["gen_ai.client.token.usage"], by_name["gen_ai.client.operation.duration"]
    assert [m["unit"] for m in ours if m["name"] == "gen_ai.client.token.usage"][-1] == "{token}"
    assert {m["type"] for m in ours} == {"histogram"}
    offline = [p for p in tokens if p["attributes"].get("gen_ai.provider.name") == "offline"]
    sums = {p["attributes"]["gen_ai.token.type"]: p["sum"] for p in offline}
    assert sums == {"input": expected["input"], "output": expected["output"]} and expected["input"] > 0
    assert {p["count"] for p in offline} == {2}  # one recording per call and token type
    assert all(p["attributes"]["gen_ai.operation.name"] == "chat" for p in offline)
    [duration] = [p for p in durations if p["attributes"].get("gen_ai.provider.name") == "offline"]
    assert duration["count"] == 2 and duration["explicit_bounds"][0] == 0.01
    assert sum(duration["bucket_counts"]) == 2 and duration["sum"] > 0
