"""Every server preset end to end against the loopback server speaking its dialect, over real HTTP
with the official SDK: chat, streaming (usage reported or estimated), tools (arguments in one
chunk or many, finish reasons in other spellings), an agent with two tools and an `output_type`
(the same test on every preset, the output mode chosen from the declared capabilities),
embeddings, and a 429 with `Retry-After` retried by the Prefect policy. Then what the
capabilities decide: fields never sent where a server refuses them, clear errors before any
request, and a 400 that names the refused parameter, its origin and the preset."""

from __future__ import annotations

import openai
import pydantic
import pytest

from prefect_beluga import Chain, llms
from prefect_beluga.agents import OUTPUT_TOOL, Agent
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.retry import is_permanent
from prefect_beluga.embeddings import AzureOpenAIEmbedder, OpenAIEmbedder
from prefect_beluga.llms import SERVERS, Config, Factory
from prefect_beluga.testing.openai_server import DIALECTS, OpenAIServer, embedding_vector
from prefect_beluga.tools import tool

KEY = "sk-test-preset"
VERSION = "2024-10-21"
PRESETS = sorted(SERVERS)

#: The output mode each preset's capabilities lead an agent with tools to.
EXPECTED_MODE = {
    "openai": "json_schema", "azure_openai": "json_schema", "ollama": "json_schema", "vllm": "json_schema",
    "groq": "tool", "gemini": "tool", "anthropic": "tool", "compatible": "prompted",
}


def llm_for(server: OpenAIServer, preset: str, **options) -> llms.ChatModel:
    options.setdefault("api_key", KEY)
    if preset == "azure_openai":
        config = Config(provider="azure_openai", model_name="chat-deployment", base_url=server.base_url,
                        api_version=VERSION, **options)
        return Factory().create_provider("azure_openai", config)
    return Factory().create_provider(
        "openai", Config(provider="openai", server=preset, model_name="some-model", base_url=server.base_url, **options)
    )


@pytest.fixture(params=PRESETS)
def preset(request):
    return request.param


@pytest.fixture
def server(preset):
    with OpenAIServer(api_key=KEY, dialect=preset, dimension=16) as server:
        yield server


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Sums(pydantic.BaseModel):
    total: int
    product: int


def test_every_preset_has_a_dialect_and_cites_its_documentation():
    assert set(SERVERS) == set(DIALECTS)
    for server in SERVERS.values():
        assert server.docs and all(url.startswith("https://") for url in server.docs), server.name


# -- the same tests on every preset -------------------------------------------------------------


def test_chat(server, preset):
    llm = llm_for(server, preset, temperature=0.3)
    reply = llm.generate("hello preset")
    assert reply.content == "Echo: hello preset" and reply.finish_reason == "stop"
    assert reply.usage.total_tokens > 0 and not reply.usage.estimated
    assert llm.capabilities == SERVERS[preset].capabilities


async def test_stream_reports_usage_or_marks_the_estimate(server, preset):
    llm = llm_for(server, preset)
    deltas = []
    reply = await llm.agenerate("stream me", on_token=deltas.append)
    assert "".join(deltas) == reply.content == "Echo: stream me"
    body = server.chat_requests()[-1].body
    if llm.capabilities.stream_usage:
        assert body["stream_options"] == {"include_usage": True} and not reply.usage.estimated
    else:
        assert "stream_options" not in body
        if preset == "groq":  # Groq's usage rides on its x_groq extension
            assert not reply.usage.estimated
        else:
            assert reply.usage.estimated and reply.usage.completion_tokens > 0


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
async def test_tool_calls_whatever_the_chunking_and_finish_reason_spelling(server, preset, streamed):
    llm = llm_for(server, preset)
    server.reply_with({"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 40}},
                                      {"name": "multiply", "arguments": {"a": 6, "b": 7}}]})
    reply = await llm.agenerate("use tools", tools=[add.to_openai(), multiply.to_openai()],
                                on_token=(lambda delta: None) if streamed else None)
    assert [(c.name, c.arguments) for c in reply.message.tool_calls] == [
        ("add", '{"a": 2, "b": 40}'), ("multiply", '{"a": 6, "b": 7}')]
    assert all(c.id for c in reply.message.tool_calls)
    assert reply.finish_reason == "tool_calls"  # "stop", "tool_use", ... normalised
    body = server.chat_requests()[-1].body
    assert ("parallel_tool_calls" in body) is llm.capabilities.parallel_tool_calls


def test_an_agent_with_two_tools_and_an_output_type(server, preset):
    llm = llm_for(server, preset)
    agent = Agent(llm, tools=[add, multiply], output_type=Sums, name=f"sums-{preset}")
    assert agent.output_mode == EXPECTED_MODE[preset]
    server.reply_with(
        {"tool_calls": [{"name": "add", "arguments": {"a": 6, "b": 7}},
                        {"name": "multiply", "arguments": {"a": 6, "b": 7}}]},
        {"output": {"total": 13, "product": 42}},
    )
    result = agent.invoke("What are 6 + 7 and 6 * 7?")
    assert result["output"] == Sums(total=13, product=42)
    first, second = server.chat_requests()
    assert [m["content"] for m in second.body["messages"] if m["role"] == "tool"] == ["13", "42"]
    for request in (first, second):
        names = [t["function"]["name"] for t in request.body["tools"]]
        if agent.output_mode == "json_schema":
            assert request.body["response_format"]["type"] == "json_schema" and OUTPUT_TOOL not in names
        elif agent.output_mode == "tool":
            assert names == ["add", "multiply", OUTPUT_TOOL] and request.body["tool_choice"] == "required"
            assert "response_format" not in request.body
        else:
            assert "response_format" not in request.body and "tool_choice" not in request.body
            assert "JSON schema of Sums" in request.body["messages"][0]["content"]


def test_an_agent_without_tools_asks_for_structured_output_the_servers_way(server, preset):
    agent = Agent(llm_for(server, preset), output_type=Sums)
    server.reply_with({"output": {"total": 1, "product": 2}})
    assert agent.invoke("numbers?")["output"] == Sums(total=1, product=2)
    body = server.chat_requests()[-1].body
    caps = SERVERS[preset].capabilities
    if caps.json_schema:
        assert agent.output_mode == "json_schema" and body["response_format"]["type"] == "json_schema"
    elif caps.tool_choice:
        assert agent.output_mode == "tool"
        assert body["tool_choice"] == {"type": "function", "function": {"name": OUTPUT_TOOL}}
    else:
        assert agent.output_mode == "prompted" and "response_format" not in body


def test_embeddings_where_the_server_has_them(server, preset):
    if preset == "azure_openai":
        embedder = AzureOpenAIEmbedder("embed-deployment", azure_endpoint=server.base_url, api_version=VERSION,
                                       api_key=KEY, dimension=16)
    elif SERVERS[preset].capabilities.embeddings:
        embedder = OpenAIEmbedder("text-embedding-3-small", server=preset, base_url=server.base_url, api_key=KEY,
                                  dimension=16)
    else:
        with pytest.raises(ValidationError, match=rf"server preset '{preset}' .* offers no embeddings endpoint"):
            OpenAIEmbedder("text-embedding-3-small", server=preset, base_url=server.base_url, api_key=KEY)
        return
    assert embedder.embed_documents(["one", "two"]) == [pytest.approx(embedding_vector(t, 16)) for t in ("one", "two")]


async def test_a_429_with_retry_after_is_retried_by_the_chain_policy(server, preset):
    server.fail_next(429, retry_after=1)
    chain = Chain([llm_for(server, preset)], name=f"preset-retry-{preset}", retries=1)
    assert (await chain.ainvoke("again"))["output"] == "Echo: again"
    first, second = server.chat_requests()
    assert second.at - first.at >= 1.0  # the SDK did not retry; the Prefect policy waited as asked


# -- what the capabilities decide ---------------------------------------------------------------


def test_unknown_presets_and_capabilities_are_clear_errors():
    with pytest.raises(ValidationError, match=r"server: Value error, unknown server preset 'olama'; known presets: "):
        Config(server="olama")
    with pytest.raises(ValidationError, match=r"unknown capability 'json_mode'; known capabilities: json_schema"):
        Config(server="ollama", capabilities={"json_mode": True})
    with pytest.raises(ValidationError, match=r"capability 'seed' must be True or False"):
        Config(capabilities={"seed": "yes"})
    with pytest.raises(ValidationError, match=r"server preset 'vllm' \(vLLM\) has no usual address; pass base_url="):
        llms.OpenAIChatModel(Config(server="vllm"))
    with pytest.raises(ValidationError, match=r"needs a Groq API key: pass api_key=.*GROQ_API_KEY"):
        llms.OpenAIChatModel(Config(server="groq"))


def test_presets_have_their_usual_address_and_key_variable(monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", "gsk-from-env")
    groq = llms.OpenAIChatModel(Config(server="groq", model_name="llama-3.3-70b-versatile"))
    assert groq._clients._options["base_url"] == "https://api.groq.com/openai/v1"
    assert groq._clients._options["api_key"] == "gsk-from-env"
    local = llms.OpenAIChatModel(Config(server="ollama", model_name="llama3.2"))  # no key needed
    assert local._clients._options["base_url"] == "http://localhost:11434/v1"
    assert llms.OpenAIChatModel(Config(server="ollama")).cache_key() != llms.OpenAIChatModel(
        Config(server="vllm", base_url="http://localhost:11434/v1")).cache_key()


def test_options_a_preset_does_not_support_are_refused_before_any_request(server, preset):
    if SERVERS[preset].capabilities.seed:
        llm_for(server, preset, options={"seed": 1}).generate("seeded")
        assert server.chat_requests()[-1].body["seed"] == 1
    else:
        with pytest.raises(ValidationError, match=rf"option 'seed' is not supported by server preset '{preset}'"):
            llm_for(server, preset, options={"seed": 1})
        assert not server.requests


def test_a_response_format_the_preset_lacks_is_refused_before_any_request():
    with OpenAIServer(api_key=KEY, dialect="anthropic") as server:
        llm = llm_for(server, "anthropic")
        with pytest.raises(ValidationError, match=r"response_format json_schema is not supported by server preset "
                                                  r"'anthropic' \(capability json_schema=False"):
            llm.generate("x", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})
        assert not server.requests
    with pytest.raises(ValidationError, match=r"output_mode='json_schema' needs capability json_schema"):
        Agent(llm, output_type=Sums, output_mode="json_schema")


def test_a_refused_parameter_is_reported_naming_it_its_origin_and_the_preset():
    with OpenAIServer(api_key=KEY, dialect="groq") as server:
        llm = llm_for(server, "groq", options={"logprobs": True})
        with pytest.raises(openai.BadRequestError) as raised:
            llm.generate("x")
        note = "\n".join(raised.value.__notes__)
        assert "refused the request parameter 'logprobs'" in note
        assert "llms.Config(options={'logprobs': ...})" in note and "server preset 'groq'" in note
        assert is_permanent(raised.value)
        # A capability declared wrongly: the server refuses json_schema with tools.
        wrong = llm_for(server, "groq", capabilities={"json_schema_with_tools": True})
        with pytest.raises(openai.BadRequestError) as raised:
            Agent(wrong, tools=[add], output_type=Sums).invoke("x")
        note = "\n".join(raised.value.__notes__)
        assert "refused the request parameter 'response_format'" in note
        assert "capabilities={'json_schema': False}" in note and "server preset 'groq'" in note


def test_capability_overrides_change_the_request():
    with OpenAIServer(api_key=KEY, dialect="vllm") as server:
        llm = llm_for(server, "vllm", capabilities={"parallel_tool_calls": True, "stream_usage": False})
        server.reply_with({"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]})
        llm.generate("x", tools=[add.to_openai()], on_token=lambda delta: None)
        body = server.chat_requests()[-1].body
        assert body["parallel_tool_calls"] is True and "stream_options" not in body
        assert Agent(llm_for(server, "vllm", capabilities={"json_schema": False}), tools=[add],
                     output_type=Sums).output_mode == "tool"


def test_the_openai_preset_keeps_the_request_unchanged(openai_server):
    llm = Factory().create_provider("openai", Config(model_name="gpt-4o-mini", base_url=openai_server.base_url,
                                                     api_key="sk-test"))
    llm.generate("plain")
    assert openai_server.requests[-1].body == {"model": "gpt-4o-mini",
                                               "messages": [{"role": "user", "content": "plain"}]}


@pytest.mark.parametrize("preset", ["anthropic", "compatible"])
def test_every_output_mode_gets_one_corrective_turn_then_a_clear_error(preset):
    from prefect_beluga.agents import AgentOutputError

    with OpenAIServer(api_key=KEY, dialect=preset) as server:
        agent = Agent(llm_for(server, preset), output_type=Sums)
        server.reply_with({"output": {"total": 1}}, {"output": {"total": 1, "product": 2}})
        assert agent.invoke("numbers?")["output"] == Sums(total=1, product=2)
        last = server.chat_requests()[-1].body["messages"][-1]
        assert "field 'product': Field required" in last["content"]
        if agent.output_mode == "tool":
            assert last["role"] == "tool"  # the error goes back as the output tool's result
        server.reply_with({"output": {"total": "x"}}, {"output": {"product": 2}})
        with pytest.raises(AgentOutputError, match="even after a corrective turn"):
            agent.invoke("numbers?")


def test_the_capability_table_of_docs_providers_is_the_declared_one():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "providers.md").read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line.startswith("| preset |"))
    names = [cell.strip() for cell in header.strip("|").split("|")][1:]
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells and cells[0] in SERVERS and len(cells) == len(names) + 1:
            rows[cells[0]] = dict(zip(names, (cell == "yes" for cell in cells[1:]), strict=True))
    assert set(rows) == set(SERVERS)
    for name, server in SERVERS.items():
        assert rows[name] == server.capabilities.as_dict(), name
        for url in server.docs:
            assert url in text, (name, url)
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        compile(block, "docs/providers.md", "exec")


def test_bad_output_modes_are_clear_errors():
    llm = llms.OfflineChatModel()
    with pytest.raises(ValidationError, match=r"output_mode='tool' needs an output_type"):
        Agent(llm, output_mode="tool")
    with pytest.raises(ValidationError, match=r"output_mode must be one of json_schema, tool, prompted, got 'json'"):
        Agent(llm, output_type=Sums, output_mode="json")
    with pytest.raises(ValidationError, match=r"output_mode='tool' needs capability tool_choice"):
        Agent(llm, output_type=Sums, output_mode="tool")  # the offline model cannot be forced to call a tool

    @tool(name=OUTPUT_TOOL)
    def clash(x: int) -> int:
        """Clashes with the output tool."""
        return x

    with OpenAIServer(api_key=KEY, dialect="anthropic") as server:
        with pytest.raises(ValidationError, match=r"a tool is named 'final_result'.*rename it"):
            Agent(llm_for(server, "anthropic"), tools=[clash], output_type=Sums)
