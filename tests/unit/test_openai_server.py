"""prefect_beluga.testing.OpenAIServer: the wire protocol as the official SDK sees it, and faults."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest

from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.openai_server import embedding_vector

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


@pytest.fixture
def client(openai_server):
    return openai.OpenAI(api_key="sk-test", base_url=openai_server.base_url, max_retries=0, timeout=5)


def ask(client, text="hello", **options):
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **options
    )


def test_context_manager_binds_a_free_loopback_port_and_releases_it():
    with OpenAIServer() as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        port = server.port
        assert httpx.get(f"{server.base_url}/models").json()["object"] == "list"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
    with pytest.raises(ValueError, match="loopback"):
        OpenAIServer(host="0.0.0.0")


def test_chat_completion_echoes_and_reports_usage(client, openai_server):
    reply = ask(client, "hello there")
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4
    (request,) = openai_server.requests
    assert request.method == "POST" and request.path == CHAT
    assert request.body == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
    assert request.bearer == "sk-test"


def test_scripted_replies_then_echo_and_responder():
    with OpenAIServer(replies=["first"], responder=lambda messages: f"{len(messages)} messages") as server:
        client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
        server.reply_with("second")
        assert [ask(client).choices[0].message.content for _ in range(3)] == ["first", "second", "1 messages"]


def test_max_tokens_cuts_the_reply_with_finish_reason_length(client, openai_server):
    openai_server.reply_with("one two three four five")
    reply = ask(client, max_tokens=2)
    assert reply.choices[0].message.content == "one two"
    assert reply.choices[0].finish_reason == "length"


def test_streaming_is_server_sent_events_with_a_usage_chunk(client, openai_server):
    chunks = list(ask(client, "hello stream", stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == "Echo: hello stream" and len(deltas) == 3
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4  # "Echo", ":", " hello", " stream"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    with httpx.stream(
        "POST", f"{openai_server.base_url}/chat/completions", headers={"authorization": "Bearer sk-test"},
        json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_embeddings_float_and_base64_are_the_same_deterministic_vectors(client, openai_server):
    floats = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], encoding_format="float")
    default = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])  # SDK asks base64
    assert openai_server.requests[1].body["encoding_format"] == "base64"
    assert [d.embedding for d in floats.data] == [d.embedding for d in default.data]
    assert floats.data[0].embedding == embedding_vector("a", 16) != embedding_vector("b", 16)
    assert abs(sum(v * v for v in floats.data[0].embedding) - 1) < 1e-5
    raw = httpx.post(f"{openai_server.base_url}/embeddings", headers={"authorization": "Bearer sk-test"},
                     json={"model": "m", "input": "a", "encoding_format": "base64", "dimensions": 4}).json()
    decoded = list(struct.unpack("<4f", base64.b64decode(raw["data"][0]["embedding"])))
    assert decoded == embedding_vector("a", 4)
    assert raw["usage"] == {"prompt_tokens": 1, "total_tokens": 1}


def test_wrong_key_gets_openais_401_without_the_key(openai_server):
    key = "sk-wrong-secret-key-9876"
    client = openai.OpenAI(api_key=key, base_url=openai_server.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        ask(client)
    assert raised.value.status_code == 401 and "Incorrect API key" in str(raised.value)
    assert key not in str(raised.value)


def test_rate_limit_with_retry_after_then_success(client, openai_server):
    openai_server.fail_next(429, times=2, retry_after=7, retry_after_ms=1500)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as raised:
            ask(client)
        assert raised.value.response.headers["retry-after"] == "7"
        assert raised.value.response.headers["retry-after-ms"] == "1500"
    assert ask(client).choices[0].message.content == "Echo: hello"
    assert len(openai_server.requests) == 3 and openai_server.pending_faults == 0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(client, openai_server, status):
    openai_server.fail_next(status)
    with pytest.raises(openai.InternalServerError) as raised:
        ask(client)
    assert raised.value.status_code == status


def test_dropped_connection_and_malformed_body(client, openai_server):
    openai_server.drop_next()
    with pytest.raises(openai.APIConnectionError):
        ask(client)
    openai_server.malformed_next()
    with pytest.raises(ValueError):  # the SDK's JSON decoding error
        ask(client)
    assert ask(client).choices[0].message.content == "Echo: hello"


def test_slow_reply_times_the_client_out(openai_server):
    openai_server.slow_next(30)
    client = openai.OpenAI(api_key="sk-test", base_url=openai_server.base_url, max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        ask(client)


def test_faults_can_target_one_path_and_custom_bodies(client, openai_server):
    openai_server.fail_next(400, path=EMBEDDINGS, body={"error": {"message": "custom", "type": "x"}})
    assert ask(client).choices[0].message.content == "Echo: hello"  # not the embeddings fault
    with pytest.raises(openai.BadRequestError, match="custom"):
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert [r.path for r in openai_server.requests] == [CHAT, EMBEDDINGS]
    assert openai_server.requests_to(EMBEDDINGS)[0].body["input"] == "a"


def test_invalid_requests_get_400s(client, openai_server):
    with pytest.raises(openai.BadRequestError, match="non-empty"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    with pytest.raises(openai.BadRequestError, match=r"input\[1\]"):
        client.embeddings.create(model="text-embedding-3-small", input=["a", ""])
    with pytest.raises(openai.NotFoundError):
        client.post("/nowhere", cast_to=object, body={})


def test_latency_and_max_in_flight():
    import threading

    with OpenAIServer(latency=0.2) as server:
        client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
        threads = [threading.Thread(target=ask, args=(client,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(server.requests) == 3 and 1 <= server.max_in_flight <= 3
        server.reset()
        assert server.requests == [] and server.max_in_flight == 0


# -- dialects -------------------------------------------------------------------------------------


def test_azure_dialect_paths_api_version_and_api_key_header():
    with OpenAIServer(api_key="az-key", dialect="azure_openai", deployments=["dep"]) as server:
        client = openai.AzureOpenAI(azure_endpoint=server.base_url, api_version="2024-10-21", api_key="az-key",
                                    max_retries=0)
        reply = client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Echo: hi"
        (request,) = server.chat_requests()
        assert request.path == "/openai/deployments/dep/chat/completions" and request.query == "api-version=2024-10-21"
        assert request.headers["api-key"] == "az-key"
        chunks = list(client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "x"}],
                                                     stream=True))
        assert chunks[0].choices == [] and chunks[0].model_extra.get("prompt_filter_results")
        with pytest.raises(openai.NotFoundError, match="deployment for this resource does not exist") as raised:
            client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.code == "DeploymentNotFound"
        wrong = openai.AzureOpenAI(azure_endpoint=server.base_url, api_version="2024-10-21", api_key="nope",
                                   max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="Access denied"):
            wrong.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])


SCHEMA = {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}


def test_a_dialect_refuses_fields_with_a_400_naming_them():
    with OpenAIServer(dialect="compatible") as server:
        client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
        for options, param in (
            ({"response_format": SCHEMA}, "response_format"),
            ({"stream": True, "stream_options": {"include_usage": True}}, "stream_options"),
            ({"seed": 1}, "seed"),
        ):
            with pytest.raises(openai.BadRequestError) as raised:
                ask(client, **options)
            assert raised.value.param == param
    with OpenAIServer(dialect="groq") as server:
        client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
        with pytest.raises(openai.BadRequestError, match="'logprobs' is not supported"):
            ask(client, logprobs=True)
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        with pytest.raises(openai.BadRequestError, match="cannot be combined with 'tools'"):
            ask(client, tools=tools, response_format=SCHEMA)
        assert ask(client, response_format=SCHEMA)


def test_dialects_chunk_tool_calls_differently_and_spell_finish_reasons_their_way():
    call = {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 22}}]}
    pieces = {}
    for dialect in ("openai", "ollama", "anthropic"):
        with OpenAIServer(dialect=dialect, replies=[call, call]) as server:
            client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
            chunks = list(ask(client, stream=True))
            pieces[dialect] = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert finish == [{"openai": "tool_calls", "ollama": "stop", "anthropic": "tool_use"}[dialect]]
            assert ask(client).choices[0].finish_reason == finish[0]
    assert len(pieces["openai"]) > 1 and len(pieces["ollama"]) == 1


def test_dialects_without_stream_usage_or_embeddings():
    with OpenAIServer(dialect="groq") as server:
        client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
        chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
        assert all(c.usage is None for c in chunks)
        assert chunks[-1].model_extra["x_groq"]["usage"]["completion_tokens"] > 0
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="e", input=["x"])
    with pytest.raises(ValueError, match="unknown dialect 'grok'"):
        OpenAIServer(dialect="grok")


def test_structured_replies_follow_what_the_request_asked_for():
    tools = [{"type": "function", "function": {"name": "final_result", "parameters": {"type": "object"}}}]
    with OpenAIServer(dialect="anthropic") as server:
        client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
        server.reply_with({"output": {"a": 1}}, {"output": {"a": 2}}, {"output": {"a": 3}})
        forced = ask(client, tools=tools, tool_choice={"type": "function", "function": {"name": "final_result"}})
        assert forced.choices[0].message.tool_calls[0].function.arguments == '{"a": 1}'
        ignored = ask(client, response_format={"type": "json_object"})  # Anthropic ignores response_format
        assert ignored.choices[0].message.content.startswith("Here is the answer:\n```json")
    with OpenAIServer() as server:
        client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0)
        server.reply_with({"output": {"a": 3}})
        assert ask(client, response_format={"type": "json_object"}).choices[0].message.content == '{"a": 3}'
