"""llms: Config, Factory, ChatModel; the OpenAI provider against the loopback server over real
HTTP (the SDK is never patched), retried through the Prefect retry policy of a Chain; the
offline provider."""

from __future__ import annotations

import logging
import pickle
import traceback

import openai
import pytest

from prefect_beluga import Chain, llms, schema
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.retry import is_permanent, retry_after_of
from prefect_beluga.llms import Config, Factory, OfflineChatModel, OpenAIChatModel
from prefect_beluga.schema import AIMessage, HumanMessage, SystemMessage
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.tokens import count_message_tokens, count_tokens

CHAT = "/v1/chat/completions"
KEY = "sk-test"


def model_for(server: OpenAIServer, **options) -> OpenAIChatModel:
    options.setdefault("api_key", KEY)
    return Factory().create_provider(
        "openai", Config(provider="openai", model_name="gpt-4o-mini", base_url=server.base_url, **options)
    )


# --- Config and Factory -------------------------------------------------------------------------


def test_config_hides_the_key_everywhere():
    config = Config(provider="openai", model_name="gpt-4o-mini", api_key="sk-very-secret")
    for text in (repr(config), str(config), config.model_dump_json(), str(config.model_dump())):
        assert "sk-very-secret" not in text
    assert config.api_key.get_secret_value() == "sk-very-secret"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 3}, "temperature: Input should be less than or equal to 2"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than 0"),
        ({"timeout": -1}, "timeout: Input should be greater than 0"),
        ({"base_url": "127.0.0.1:8000"}, "base_url: Value error, must start with http"),
        ({"api_key": 12345}, "api_key: Input should be a valid string"),
        ({"options": {"messages": []}}, r"\['messages'\] are set by the model itself"),
        ({"temprature": 0.5}, "temprature: Extra inputs are not permitted"),
    ],
)
def test_bad_config_is_a_validation_error_naming_the_field(options, message):
    with pytest.raises(ValidationError, match=message) as raised:
        Config(**options)
    assert "12345" not in str(raised.value)  # input values (keys!) are not echoed


def test_unknown_provider_lists_the_known_ones():
    known = "azure_openai, offline, openai"
    with pytest.raises(ValidationError, match=f"unknown LLM provider 'antrhopic'; known providers: {known}"):
        Factory().create_provider("antrhopic", Config(model_name="x"))


def test_provider_name_and_config_must_agree():
    with pytest.raises(ValidationError, match="create_provider\\('offline', config\\) but config.provider is 'openai'"):
        Factory().create_provider("offline", Config(provider="openai"))


def test_users_can_register_providers():
    class Upper(llms.ChatModel):
        def __init__(self, config):
            self.config = config

        async def _agenerate(self, messages):
            return schema.ChatResult(message=AIMessage(messages[-1].content.upper()), model=self.config.model_name)

    Factory.register("upper-test", Upper)
    try:
        assert "upper-test" in Factory.providers()
        model = Factory().create_provider("upper-test", Config(model_name="shouty"))
        assert model.generate("hi").content == "HI"
        assert model.invoke({"input": "hey"})["output"] == "HEY"
        assert model.config.provider == "upper-test"
        with pytest.raises(ValidationError, match="already registered"):
            Factory.register("upper-test", Upper)
        Factory.register("not-a-model", lambda config: object())
        with pytest.raises(ValidationError, match="returned object, not a ChatModel"):
            Factory().create_provider("not-a-model")
    finally:
        Factory.unregister("upper-test")
        Factory.unregister("not-a-model")


def test_missing_key_names_the_env_var_and_the_block(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="OPENAI_API_KEY") as raised:
        Factory().create_provider("openai", Config(model_name="gpt-4o-mini"))
    assert "block" in str(raised.value) and "offline" in str(raised.value)
    assert is_permanent(raised.value)


def test_the_key_is_read_from_openai_api_key_when_not_given(monkeypatch, openai_server):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    model = OpenAIChatModel(Config(base_url=openai_server.base_url))
    assert model.generate("hi").content == "Echo: hi"
    assert openai_server.requests[0].bearer == KEY


# --- the OpenAI provider ------------------------------------------------------------------------


def test_generate_sends_model_messages_and_options(openai_server):
    model = model_for(openai_server, temperature=0.2, max_tokens=64, options={"seed": 7, "top_p": 0.5})
    reply = model.generate([SystemMessage("Be brief."), HumanMessage("What is AI?")])
    assert reply.content == "Echo: What is AI?"
    assert reply.model == "gpt-4o-mini" and reply.finish_reason == "stop"
    (request,) = openai_server.requests
    assert request.path == CHAT
    assert request.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is AI?"}],
        "temperature": 0.2, "max_tokens": 64, "seed": 7, "top_p": 0.5,
    }
    assert "stream" not in request.body


def test_usage_is_the_servers(openai_server):
    reply = model_for(openai_server).generate([HumanMessage("hello world")])
    prompt = count_message_tokens([{"role": "user", "content": "hello world"}])
    assert reply.usage == schema.Usage(prompt_tokens=prompt, completion_tokens=count_tokens("Echo: hello world"),
                                       total_tokens=prompt + count_tokens("Echo: hello world"))


def test_dict_messages_and_a_plain_string_are_accepted(openai_server):
    model = model_for(openai_server)
    model.generate([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"}, {"role": "user", "content": "again"}])
    model.generate("just text")
    assert [m["role"] for m in openai_server.requests[0].body["messages"]] == ["system", "user", "assistant", "user"]
    assert openai_server.requests[1].body["messages"] == [{"role": "user", "content": "just text"}]


async def test_streaming_yields_deltas_and_asks_for_usage(openai_server):
    model = model_for(openai_server)
    deltas = [d async for d in model.astream([HumanMessage("tell me a story")])]
    assert deltas == ["Echo:", " tell", " me", " a", " story"]
    body = openai_server.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert list(model.stream({"input": "sync too"})) == ["Echo:", " sync", " too"]


async def test_generate_with_on_token_streams_and_still_reports_usage(openai_server):
    seen = []
    result = await model_for(openai_server).agenerate("count me", on_token=seen.append)
    assert "".join(seen) == result.content == "Echo: count me"
    assert result.usage.completion_tokens == count_tokens("Echo: count me") and result.usage.prompt_tokens > 0
    assert result.finish_reason == "stop"


async def test_as_a_runnable_step(openai_server):
    model = model_for(openai_server)
    output = await model.ainvoke({"input": "What is AI?", "system": "Be brief.", "history": "Human: hi\nAI: hello"})
    assert output["output"] == "Echo: What is AI?"
    assert output["model"] == "gpt-4o-mini" and output["usage"]["total_tokens"] > 0
    messages = openai_server.requests[0].body["messages"]
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("Be brief.")
    assert "Human: hi\nAI: hello" in messages[0]["content"]
    assert (await model.ainvoke("plain"))["output"] == "Echo: plain"
    await model.ainvoke({"messages": [{"role": "user", "content": "from messages"}]})
    assert openai_server.requests[-1].body["messages"] == [{"role": "user", "content": "from messages"}]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages is empty"),
        ("   ", "empty string"),
        ([HumanMessage("ok"), 42], "message 1 is a int; expected a SystemMessage"),
        ([{"role": "wizard", "content": "x"}], "message 0 has role 'wizard'"),
        ([{"role": "user", "content": None}], r"message 0 \(user\) content must be a str, got NoneType"),
        ([{"role": "tool", "content": "x"}], r"message 0 \(tool\) is invalid: tool_call_id: Field required"),
        ({"role": "user", "content": "x"}, "expected a list of messages"),
        (None, "expected a list of messages"),
    ],
)
def test_bad_messages_are_rejected_before_any_request(openai_server, messages, message):
    with pytest.raises(ValidationError, match=message):
        model_for(openai_server).generate(messages)
    assert openai_server.requests == []


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"question": "x"}, r"neither 'input' nor 'messages' \(keys: \['question'\]\)"),
        ({"input": 3}, "'input' must be a str, got int"),
        ({"input": "x", "system": ["no"]}, "'system' must be a str"),
        (["not", "a", "dict"], "expects {'input': str} or {'messages': \\[...\\]}"),
    ],
)
async def test_bad_runnable_input_names_the_model(openai_server, state, message):
    with pytest.raises(ValidationError, match=message) as raised:
        await model_for(openai_server).ainvoke(state)
    assert "chat model 'openai:gpt-4o-mini'" in str(raised.value)


async def test_the_key_never_shows(openai_server, caplog):
    model = model_for(openai_server, api_key="sk-secret-never-shown-1234")
    assert "sk-secret" not in repr(model) and "sk-secret" not in repr(model.config)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(openai.AuthenticationError) as raised:
            await model.agenerate("hi")
    error = raised.value
    dumped = "".join(traceback.format_exception(error)) + repr(error) + str(error.body)
    dumped += str(dict(error.request.headers)) + str(dict(error.response.request.headers))
    dumped += caplog.text
    assert "sk-secret-never-shown-1234" not in dumped
    assert "sk-secret-never-shown-1234" not in pickle.dumps(error.body).decode("latin-1")


async def test_a_server_echoing_the_key_is_scrubbed(openai_server):
    model = model_for(openai_server, api_key="sk-echoed-key-5678")
    openai_server.fail_next(400, body={"error": {"message": "bad key sk-echoed-key-5678", "type": "x"}})
    with pytest.raises(openai.BadRequestError) as raised:
        await model.agenerate("hi")
    assert "sk-echoed-key-5678" not in str(raised.value) + str(raised.value.body) + raised.value.message
    assert "bad key [redacted]" in str(raised.value)


async def test_malformed_reply_is_a_clear_retryable_error(openai_server):
    openai_server.malformed_next()
    with pytest.raises(
        llms.ProviderResponseError,
        match=r"'gpt-4o-mini' at http://127.0.0.1:\d+/v1: the server's reply is not valid JSON",
    ):
        await model_for(openai_server).agenerate("hi")
    assert not is_permanent(llms.ProviderResponseError("x"))


async def test_sdk_errors_are_classified_for_the_retry_policy(openai_server):
    """Real exceptions from the SDK, raised by real HTTP replies."""
    model = model_for(openai_server, timeout=0.5)
    expected = {429: False, 500: False, 503: False, 408: False, 400: True, 403: True, 404: True, 422: True}
    for status, permanent in expected.items():
        openai_server.fail_next(status)
        with pytest.raises(openai.APIStatusError) as raised:
            await model.agenerate("hi")
        assert raised.value.status_code == status
        assert is_permanent(raised.value) is permanent, status
    with pytest.raises(openai.AuthenticationError) as raised:
        await model_for(openai_server, api_key="sk-wrong").agenerate("hi")
    assert is_permanent(raised.value)
    openai_server.drop_next()
    with pytest.raises(openai.APIConnectionError) as raised:
        await model.agenerate("hi")
    assert not is_permanent(raised.value)
    openai_server.slow_next(30)
    with pytest.raises(openai.APITimeoutError) as raised:
        await model.agenerate("hi")
    assert not is_permanent(raised.value)


async def test_retry_after_of_a_real_429(openai_server):
    model = model_for(openai_server)
    openai_server.fail_next(429, retry_after=12)
    openai_server.fail_next(429, retry_after_ms=250, retry_after=1)
    openai_server.fail_next(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")  # in the past
    openai_server.fail_next(429)
    seen = []
    for _ in range(4):
        with pytest.raises(openai.RateLimitError) as raised:
            await model.agenerate("hi")
        seen.append(retry_after_of(raised.value))
    assert seen == [12.0, 0.25, 0.0, None]


def test_models_pickle_and_work_after(openai_server):
    from prefect_beluga.embeddings import OpenAIEmbedder

    model = model_for(openai_server)
    model.generate("before")  # a client exists now; it is rebuilt, not pickled
    assert pickle.loads(pickle.dumps(model)).generate("after").content == "Echo: after"
    embedder = OpenAIEmbedder(api_key=KEY, base_url=openai_server.base_url, dimension=16)
    assert len(pickle.loads(pickle.dumps(embedder)).embed_query("q")) == 16


def test_openai_base_url_is_not_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    model = OpenAIChatModel(Config(api_key=KEY))
    assert model._clients._options["base_url"] == "https://api.openai.com/v1"


# --- retries through the Prefect policy of a chain step -----------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_errors_are_retried_by_the_chain_policy(openai_server, status):
    openai_server.fail_next(status, times=2)
    chain = Chain([model_for(openai_server)], name=f"llm-retry-{status}", retries=2)
    result = await chain.ainvoke({"input": "What is AI?"})
    assert result["output"] == "Echo: What is AI?"
    assert len(openai_server.requests_to(CHAT)) == 3  # the SDK did not retry on its own


async def test_retry_after_is_honoured_and_each_attempt_reaches_the_server(openai_server):
    openai_server.fail_next(429, retry_after=1)
    chain = Chain([model_for(openai_server)], name="llm-retry-after", retries=1)
    assert (await chain.ainvoke("hello"))["output"] == "Echo: hello"
    first, second = openai_server.requests_to(CHAT)
    assert second.at - first.at >= 1.0  # a lower bound only: the retry waited as asked


async def test_connection_errors_and_timeouts_are_retried_by_the_chain_policy(openai_server):
    openai_server.drop_next()
    openai_server.slow_next(30)
    chain = Chain([model_for(openai_server, timeout=0.5)], name="llm-retry-network", retries=2)
    assert (await chain.ainvoke("hello"))["output"] == "Echo: hello"
    assert len(openai_server.requests_to(CHAT)) == 3


async def test_authentication_errors_are_not_retried(openai_server):
    chain = Chain([model_for(openai_server, api_key="sk-wrong-key-4321")], name="llm-auth", retries=3)
    with pytest.raises(openai.AuthenticationError) as raised:
        await chain.ainvoke({"input": "hi"})
    assert len(openai_server.requests_to(CHAT)) == 1
    assert "Incorrect API key" in str(raised.value) and "sk-wrong-key-4321" not in str(raised.value)


async def test_exhausted_retries_raise_the_sdk_error(openai_server):
    openai_server.fail_next(503, times=3)
    chain = Chain([model_for(openai_server)], name="llm-exhausted", retries=2)
    with pytest.raises(openai.InternalServerError):
        await chain.ainvoke({"input": "hi"})
    assert len(openai_server.requests_to(CHAT)) == 3


# --- the offline provider -----------------------------------------------------------------------

CONTEXT = (
    "Prefect is a workflow orchestration tool for Python. "
    "Pinecone is a managed vector database that stores embeddings. "
    "Tiktoken counts tokens with byte pair encoding. "
    "Flows in Prefect can be scheduled with deployments."
)


def test_offline_model_answers_from_the_context_and_says_it_is_offline(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = Factory().create_provider("offline")
    reply = model.generate(
        [
            SystemMessage(f"Answer from the context.\n\nContext:\n{CONTEXT}"),
            HumanMessage("Which database stores embeddings?"),
        ]
    )
    assert reply.content == "[offline model] Pinecone is a managed vector database that stores embeddings."
    assert reply.model == "offline-extractive"
    assert reply.usage.completion_tokens == count_tokens(reply.content)
    assert reply.usage.prompt_tokens == count_message_tokens(
        [
            SystemMessage(f"Answer from the context.\n\nContext:\n{CONTEXT}"),
            HumanMessage("Which database stores embeddings?"),
        ]
    )


def test_offline_model_quotes_the_best_sentences_in_order():
    model = OfflineChatModel(max_sentences=2)
    reply = model.generate([SystemMessage(CONTEXT), HumanMessage("How are Prefect flows scheduled?")])
    assert reply.content == "[offline model] Flows in Prefect can be scheduled with deployments."
    both = model.generate([SystemMessage(CONTEXT), HumanMessage("Prefect tool and Prefect deployments?")])
    assert both.content == (
        "[offline model] Prefect is a workflow orchestration tool for Python. "
        "Flows in Prefect can be scheduled with deployments."
    )


def test_offline_model_says_plainly_when_the_context_has_no_answer():
    reply = OfflineChatModel().generate([SystemMessage(CONTEXT), HumanMessage("Who won the 1998 World Cup?")])
    assert reply.content.startswith("[offline model] I can't answer that from the given context")
    assert "offline model" in reply.content


def test_offline_model_with_context_and_question_in_one_message():
    reply = OfflineChatModel().generate(f"{CONTEXT}\n\nWhat counts tokens?")
    assert reply.content == "[offline model] Tiktoken counts tokens with byte pair encoding."


async def test_offline_model_in_a_chain_and_streaming():
    model = Factory().create_provider("offline", Config(provider="offline"))
    result = await Chain([model], name="offline-chain").ainvoke({"input": "What is Prefect?", "system": CONTEXT})
    assert result["output"].startswith("[offline model] Prefect is a workflow orchestration tool")
    assert result["usage"]["total_tokens"] > 0 and result["model"] == "offline-extractive"
    deltas = [d async for d in model.astream({"input": "What stores embeddings?", "system": CONTEXT})]
    assert "".join(deltas) == "[offline model] Pinecone is a managed vector database that stores embeddings."
    assert len(deltas) > 3
