"""Azure OpenAI: the chat model and the embedder on the official SDK's Azure client, against the
loopback server's Azure dialect (deployment paths, `api-version`, `api-key` header) over real
HTTP: chat, streaming, tools, an Entra token provider, retries through the Prefect policy with
`Retry-After`, clear errors for a missing endpoint / version / key, and the key kept out of
errors and cache keys."""

from __future__ import annotations

import pickle
import traceback

import openai
import pytest

from prefect_beluga import Chain, llms
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.fingerprint import fingerprint
from prefect_beluga.core.retry import is_permanent
from prefect_beluga.embeddings import AzureOpenAIEmbedder
from prefect_beluga.llms import AzureOpenAIChatModel, Config, Factory
from prefect_beluga.schema import HumanMessage, SystemMessage
from prefect_beluga.testing.openai_server import OpenAIServer, embedding_vector

KEY = "azure-key-0123456789abcdef"
VERSION = "2024-10-21"
AZURE_ENV = ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION", "AZURE_OPENAI_API_VERSION")


@pytest.fixture
def azure():
    with OpenAIServer(api_key=KEY, dialect="azure_openai", dimension=16, deployments=["chat-prod", "embed-prod"],
                      api_versions=[VERSION]) as server:
        yield server


@pytest.fixture(autouse=True)
def no_azure_env(monkeypatch):
    for name in AZURE_ENV:
        monkeypatch.delenv(name, raising=False)


def model_for(server: OpenAIServer, **options) -> AzureOpenAIChatModel:
    options.setdefault("api_key", KEY)
    options.setdefault("api_version", VERSION)
    return Factory().create_provider(
        "azure_openai", Config(provider="azure_openai", model_name="chat-prod", base_url=server.base_url, **options)
    )


def test_chat_goes_to_the_deployment_path_with_the_api_version_and_the_api_key_header(azure):
    model = model_for(azure, temperature=0.1, options={"seed": 3})
    reply = model.generate([SystemMessage("Be brief."), HumanMessage("What is Azure?")])
    assert reply.content == "Echo: What is Azure?" and reply.finish_reason == "stop"
    assert not reply.usage.estimated and reply.usage.total_tokens > 0
    (request,) = azure.requests
    assert request.path == "/openai/deployments/chat-prod/chat/completions"
    assert request.query == f"api-version={VERSION}"
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    assert request.body["model"] == "chat-prod" and request.body["seed"] == 3 and request.body["temperature"] == 0.1
    assert model.name == "azure_openai:chat-prod"


async def test_streaming_skips_the_content_filter_chunk_and_reports_usage(azure):
    model = model_for(azure)
    deltas = [d async for d in model.astream("stream this please")]
    assert "".join(deltas) == "Echo: stream this please"
    assert azure.requests[-1].body["stream_options"] == {"include_usage": True}
    reply = await model.agenerate("hi there", on_token=lambda delta: None)
    assert reply.content == "Echo: hi there" and not reply.usage.estimated


async def test_tools_with_arguments_streamed_in_many_chunks(azure):
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    azure.reply_with({"tool_calls": [{"name": "add", "arguments": {"a": 40, "b": 2}}]})
    reply = await model_for(azure).agenerate("add", tools=tools, on_token=lambda delta: None)
    (call,) = reply.message.tool_calls
    assert call.name == "add" and call.arguments == '{"a": 40, "b": 2}' and reply.finish_reason == "tool_calls"
    assert azure.requests[-1].body["parallel_tool_calls"] is True


async def test_an_entra_token_provider_is_used_instead_of_a_key(monkeypatch):
    calls = []

    async def token_provider() -> str:
        calls.append(1)
        return "entra-token-xyz"

    with OpenAIServer(api_key="unused", azure_ad_token="entra-token-xyz", dialect="azure_openai") as server:
        model = AzureOpenAIChatModel(Config(model_name="chat-prod", base_url=server.base_url, api_version=VERSION,
                                            azure_ad_token_provider=token_provider))
        assert (await model.agenerate("hello")).content == "Echo: hello"
        request = server.requests[-1]
        assert request.headers["authorization"] == "Bearer entra-token-xyz" and "api-key" not in request.headers
        assert calls
        # Through options too (the form DESIGN.md shows), and not sent as a request parameter.
        model = AzureOpenAIChatModel(Config(model_name="chat-prod", base_url=server.base_url, options={
            "api_version": VERSION, "azure_ad_token_provider": token_provider}))
        assert (await model.agenerate("again")).content == "Echo: again"
        assert set(server.requests[-1].body) == {"model", "messages"}


def test_endpoint_version_and_key_come_from_the_usual_environment_variables(azure, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", azure.base_url)
    monkeypatch.setenv("OPENAI_API_VERSION", VERSION)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    model = Factory().create_provider("azure_openai", Config(model_name="chat-prod"))
    assert model.generate("from env").content == "Echo: from env"
    assert azure.requests[-1].headers["api-key"] == KEY


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"api_key": KEY, "api_version": VERSION}, r"needs the Azure OpenAI resource endpoint: pass base_url=.*"
                                                   r"AZURE_OPENAI_ENDPOINT"),
        ({"api_key": KEY, "base_url": "https://x.openai.azure.com"}, r"needs an Azure OpenAI API version: pass "
                                                                     r"api_version=.*OPENAI_API_VERSION"),
        ({"base_url": "https://x.openai.azure.com", "api_version": VERSION},
         r"needs an Azure OpenAI credential: pass api_key=.*AZURE_OPENAI_API_KEY.*azure_ad_token_provider"
         r".*AzureOpenAICredentials"),
        ({"api_key": KEY, "api_version": VERSION, "base_url": "https://x", "server": "groq"},
         r"provider 'azure_openai' talks to Azure OpenAI; server='groq'"),
        ({"api_key": KEY, "api_version": VERSION, "base_url": "https://x", "options": {"seed": 1},
          "capabilities": {"seed": False}}, r"option 'seed' is not supported by server preset 'azure_openai'"),
    ],
)
def test_missing_or_clashing_settings_are_clear_errors_naming_the_option(config, message):
    with pytest.raises(ValidationError, match=message) as raised:
        Factory().create_provider("azure_openai", Config(model_name="chat-prod", **config))
    assert is_permanent(raised.value) and KEY not in str(raised.value)


def test_openai_provider_with_the_azure_preset_points_to_the_azure_provider():
    with pytest.raises(ValidationError, match=r"server='azure_openai' is a provider of its own"):
        llms.OpenAIChatModel(Config(server="azure_openai", api_key="x"))


async def test_unknown_deployment_and_api_version_are_the_sdks_not_found_errors(azure):
    with pytest.raises(openai.NotFoundError, match="DeploymentNotFound|deployment for this resource does not exist"):
        await AzureOpenAIChatModel(Config(model_name="missing", base_url=azure.base_url, api_key=KEY,
                                          api_version=VERSION)).agenerate("hi")
    with pytest.raises(openai.NotFoundError):
        await model_for(azure, api_version="1999-01-01").agenerate("hi")


async def test_the_key_never_shows_in_errors_reprs_or_pickles(azure):
    model = model_for(azure, api_key="azure-wrong-key-never-shown-42")
    assert "azure-wrong-key" not in repr(model) + repr(model.config)
    with pytest.raises(openai.AuthenticationError) as raised:
        await model.agenerate("hi")
    error = raised.value
    dumped = "".join(traceback.format_exception(error)) + repr(error) + str(error.body)
    dumped += str(dict(error.request.headers)) + str(dict(error.response.request.headers))
    assert "azure-wrong-key-never-shown-42" not in dumped
    assert "azure-wrong-key-never-shown-42" not in pickle.dumps(error).decode("latin-1")
    assert is_permanent(error)


def test_cache_keys_differ_by_endpoint_deployment_version_and_key_and_hold_no_key(azure):
    base = model_for(azure)
    keys = {
        base.cache_key(),
        model_for(azure, api_version="2025-01-01-preview").cache_key(),
        model_for(azure, api_key="another-azure-key-000").cache_key(),
        AzureOpenAIChatModel(Config(model_name="other-deployment", base_url=azure.base_url, api_key=KEY,
                                    api_version=VERSION)).cache_key(),
        AzureOpenAIChatModel(Config(model_name="chat-prod", base_url="https://other.openai.azure.com", api_key=KEY,
                                    api_version=VERSION)).cache_key(),
    }
    assert len(keys) == 5
    assert base.cache_key() == model_for(azure).cache_key()
    assert KEY not in base.cache_key() and KEY not in fingerprint(base)


def test_models_pickle_and_work_after(azure):
    model = model_for(azure)
    model.generate("before")
    assert pickle.loads(pickle.dumps(model)).generate("after").content == "Echo: after"


# -- retries through the Prefect policy of a chain step -------------------------------------------


async def test_429_with_retry_after_is_retried_by_the_chain_policy_not_the_sdk(azure):
    azure.fail_next(429, retry_after=1)
    chain = Chain([model_for(azure)], name="azure-retry-after", retries=1)
    assert (await chain.ainvoke("hello"))["output"] == "Echo: hello"
    first, second = azure.chat_requests()
    assert second.at - first.at >= 1.0


async def test_transient_errors_are_retried_once_per_attempt(azure):
    azure.fail_next(503, times=2)
    chain = Chain([model_for(azure)], name="azure-retry-5xx", retries=2)
    assert (await chain.ainvoke("hello"))["output"] == "Echo: hello"
    assert len(azure.chat_requests()) == 3


# -- embeddings -----------------------------------------------------------------------------------


def test_embeddings_go_to_the_embedding_deployment(azure):
    embedder = AzureOpenAIEmbedder("embed-prod", azure_endpoint=azure.base_url, api_version=VERSION, api_key=KEY,
                                   dimension=16)
    vectors = embedder.embed_documents(["alpha", "beta"])
    assert vectors == [pytest.approx(embedding_vector(t, 16)) for t in ("alpha", "beta")]
    (request,) = azure.embedding_requests()
    assert request.path == "/openai/deployments/embed-prod/embeddings" and request.query == f"api-version={VERSION}"
    assert request.headers["api-key"] == KEY and request.body["model"] == "embed-prod"
    assert "embed-prod" in repr(embedder) and KEY not in repr(embedder)


def test_embedder_model_decides_dimension_and_dimensions_parameter(azure):
    embedder = AzureOpenAIEmbedder("embed-prod", model="text-embedding-3-small", azure_endpoint=azure.base_url,
                                   api_version=VERSION, api_key=KEY, dimension=16)
    assert len(embedder.embed_query("q")) == 16
    assert azure.embedding_requests()[-1].body["dimensions"] == 16
    with pytest.raises(ValidationError, match=r"unknown model, so its vector size is unknown; pass dimension="):
        AzureOpenAIEmbedder("embed-prod", azure_endpoint=azure.base_url, api_version=VERSION, api_key=KEY)
    with pytest.raises(ValidationError, match=r"AzureOpenAIEmbedder\('embed-prod'\) needs an Azure OpenAI API "
                                              r"version"):
        AzureOpenAIEmbedder("embed-prod", azure_endpoint=azure.base_url, api_key=KEY, dimension=16)
    with pytest.raises(ValidationError, match=r"AzureOpenAIEmbedder\('embed-prod'\) needs the Azure OpenAI resource "
                                              r"endpoint: pass azure_endpoint=.*AZURE_OPENAI_ENDPOINT"):
        AzureOpenAIEmbedder("embed-prod", api_version=VERSION, api_key=KEY, dimension=16)


# -- rate limits ----------------------------------------------------------------------------------


async def test_every_azure_request_takes_a_rate_limit_slot_first_retries_included(azure):
    from prefect_beluga.core import _limits as limits

    taken: list[str] = []

    class Recording:
        async def acquire(self, name: str) -> None:
            taken.append(name)

    previous = limits.set_limiter(Recording())
    try:
        azure.fail_next(429, retry_after=0)
        chain = Chain([model_for(azure, rate_limit="azure-openai")], name="azure-rate-limited", retries=1)
        assert (await chain.ainvoke("hello"))["output"] == "Echo: hello"
        embedder = AzureOpenAIEmbedder("embed-prod", azure_endpoint=azure.base_url, api_version=VERSION,
                                       api_key=KEY, dimension=16, rate_limit="azure-openai")
        await embedder.aembed_query("q")
    finally:
        limits.set_limiter(previous)
    assert taken == ["azure-openai"] * 3 and len(azure.requests) == 3
