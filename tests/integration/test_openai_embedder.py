"""OpenAIEmbedder against the loopback server: batching by count and tokens, concurrency,
order, bad input, dimension checks, retries through a Chain's Prefect policy."""

from __future__ import annotations

import random

import openai
import pytest

from prefect_beluga import Chain
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.retry import is_permanent
from prefect_beluga.embeddings import Embedder, OpenAIEmbedder
from prefect_beluga.llms import ProviderResponseError
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.openai_server import embedding_vector
from prefect_beluga.tokens import count_tokens, encoding_for

EMBEDDINGS = "/v1/embeddings"


def embedder_for(server: OpenAIServer, **options) -> OpenAIEmbedder:
    options.setdefault("api_key", "sk-test")
    options.setdefault("dimension", 16)
    return OpenAIEmbedder(base_url=server.base_url, **options)


def sizes(server: OpenAIServer) -> list[int]:
    return sorted((len(r.body["input"]) for r in server.requests_to(EMBEDDINGS)), reverse=True)


async def test_vectors_come_back_in_input_order(openai_server):
    texts = [f"document number {i}" for i in range(25)]
    embedder = embedder_for(openai_server, batch_size=4)
    vectors = await embedder.aembed_documents(texts)
    assert vectors == [embedding_vector(t, 16) for t in texts]
    assert isinstance(embedder, Embedder) and embedder.dimension == 16


async def test_request_shape(openai_server):
    await embedder_for(openai_server).aembed_documents(["a", "b"])
    (request,) = openai_server.requests
    assert request.path == EMBEDDINGS and request.bearer == "sk-test"
    assert request.body == {"model": "text-embedding-3-small", "input": ["a", "b"],
                            "dimensions": 16, "encoding_format": "base64"}


async def test_native_dimension_is_not_requested():
    with OpenAIServer(dimension=1536) as server:
        vectors = await OpenAIEmbedder(api_key="k", base_url=server.base_url).aembed_documents(["a"])
        assert len(vectors[0]) == 1536
        assert "dimensions" not in server.requests[0].body


async def test_batches_by_count(openai_server):
    await embedder_for(openai_server, batch_size=3).aembed_documents([f"t{i}" for i in range(10)])
    assert sizes(openai_server) == [3, 3, 3, 1]


async def test_batches_by_token_budget(openai_server):
    words = lambda n: " ".join(["word"] * n)  # noqa: E731  (n tokens)
    texts = [words(30), words(30), words(30), "short", words(50)]
    counts = [count_tokens(t) for t in texts]
    assert counts[0] == 30
    embedder = embedder_for(openai_server, batch_size=100, max_batch_tokens=64, max_input_tokens=64)
    assert embedder.batches(texts) == [[0, 1], [2, 3], [4]]
    vectors = await embedder.aembed_documents(texts)
    assert len(vectors) == 5 and vectors[3] == embedding_vector("short", 16)
    for request in openai_server.requests:
        assert sum(count_tokens(t) for t in request.body["input"]) <= 64
    assert sizes(openai_server) == [2, 2, 1]


def exact_batches(texts: list[str], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """The reference batching: every text counted with tiktoken."""
    batches, current, budget = [], [], 0
    for index, text in enumerate(texts):
        size = count_tokens(text)
        if current and (len(current) >= batch_size or budget + size > max_batch_tokens):
            batches.append(current)
            current, budget = [], 0
        current.append(index)
        budget += size
    return batches + [current] if current else batches


@pytest.mark.parametrize("batch_size, max_batch_tokens", [(100, 60), (7, 10_000), (50, 200), (3, 25)])
def test_batches_are_those_of_exact_token_counts(batch_size, max_batch_tokens):
    rng = random.Random(batch_size)
    words = ["word", "naïve", "東京", "x", "supercalifragilistic", "42", "🙂", "don't"]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 4))) for _ in range(400)]
    embedder = OpenAIEmbedder(api_key="k", dimension=8, batch_size=batch_size,
                              max_batch_tokens=max_batch_tokens, max_input_tokens=25)
    assert embedder.batches(texts) == exact_batches(texts, batch_size, max_batch_tokens)


def test_texts_are_tokenized_only_where_their_length_could_break_a_limit(monkeypatch):
    encoding = encoding_for("text-embedding-3-small")
    tokenized = []
    encode = encoding.encode_ordinary
    monkeypatch.setattr(encoding, "encode_ordinary", lambda text: tokenized.append(text) or encode(text))
    embedder = OpenAIEmbedder(api_key="k", dimension=8, batch_size=10, max_batch_tokens=1000, max_input_tokens=100)
    assert embedder.batches([f"short text {i}" for i in range(25)]) == [list(range(0, 10)), list(range(10, 20)),
                                                                      list(range(20, 25))]
    assert tokenized == []  # 10 texts of at most 14 bytes never come near 1000 tokens
    long = "word " * 30  # 150 bytes, 30 tokens: only its count can tell it fits
    assert embedder.batches(["a", long]) == [[0, 1]] and tokenized == [long]


async def test_batches_run_concurrently_under_the_limit():
    with OpenAIServer(dimension=8, latency=0.2) as server:
        embedder = OpenAIEmbedder(api_key="k", base_url=server.base_url, dimension=8,
                                  batch_size=1, max_concurrency=3)
        await embedder.aembed_documents([f"t{i}" for i in range(9)])
        assert len(server.requests) == 9
        assert server.max_in_flight == 3


async def test_empty_list_makes_no_request(openai_server):
    assert await embedder_for(openai_server).aembed_documents([]) == []
    assert openai_server.requests == []


async def test_embed_query_and_runnable_interface(openai_server):
    embedder = embedder_for(openai_server)
    assert await embedder.aembed_query("what is a?") == embedding_vector("what is a?", 16)
    assert embedder.embed_documents(["x"]) == [embedding_vector("x", 16)]
    assert (await embedder.ainvoke({"texts": ["a"]})) == {"embeddings": [embedding_vector("a", 16)]}
    with pytest.raises(ValidationError, match="non-empty str"):
        await embedder.aembed_query("  ")


async def test_an_input_over_the_model_limit_is_rejected_by_index(openai_server):
    long_text = " ".join(["token"] * 9000)
    with pytest.raises(ValidationError, match=r"text 2 is 9000 tokens, over the model's limit of 8191"):
        await embedder_for(openai_server).aembed_documents(["a", "b", long_text])
    assert openai_server.requests == []


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", ""], "text 1 is empty"),
        (["ok", 3], "item 1 is int, expected str"),
        ("just a string", "expected a list of str, got str"),
    ],
)
async def test_bad_texts_are_rejected_before_any_request(openai_server, texts, message):
    with pytest.raises(ValidationError, match=message):
        await embedder_for(openai_server).aembed_documents(texts)
    assert openai_server.requests == []


async def test_dimension_mismatch_from_the_server_is_a_clear_error():
    with OpenAIServer(dimension=16, honour_dimensions=False) as server:
        embedder = OpenAIEmbedder(api_key="k", base_url=server.base_url, dimension=8)
        with pytest.raises(ValidationError, match="returned vectors of dimension 16, expected 8"):
            await embedder.aembed_documents(["a"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an int from 1 to 2048"),
        ({"batch_size": 5000}, "batch_size must be an int from 1 to 2048"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
        ({"max_batch_tokens": 100}, r"max_input_tokens \(8191\) exceeds max_batch_tokens \(100\)"),
        ({"dimension": 0}, "dimension must be an int >= 1"),
        ({"model": "my-embedder", "dimension": None}, "unknown model, so its vector size is unknown; pass dimension="),
    ],
)
def test_bad_options_name_the_option(options, message):
    options = {"api_key": "k", "dimension": 16, **options}
    with pytest.raises(ValidationError, match=message):
        OpenAIEmbedder(**options)


def test_missing_key_names_the_env_var(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="OPENAI_API_KEY"):
        OpenAIEmbedder()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    embedder = OpenAIEmbedder()
    assert "sk-from-env" not in repr(embedder)


async def test_a_failing_batch_fails_the_call_and_the_key_is_not_shown(openai_server):
    openai_server.fail_next(401, body={"error": {"message": "nope sk-test", "type": "x"}}, path=EMBEDDINGS)
    with pytest.raises(openai.AuthenticationError) as raised:
        await embedder_for(openai_server, batch_size=1).aembed_documents(["a", "b", "c"])
    assert is_permanent(raised.value) and "sk-test" not in str(raised.value)


async def test_malformed_reply_is_a_provider_response_error(openai_server):
    openai_server.malformed_next(body='{"data": [', path=EMBEDDINGS)
    with pytest.raises(ProviderResponseError, match="not valid JSON"):
        await embedder_for(openai_server).aembed_documents(["a"])


async def test_float_lists_are_accepted_and_malformed_items_rejected(openai_server):
    floats = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.25] * 16}]}
    openai_server.fail_next(200, body=floats, path=EMBEDDINGS)  # a server that ignores encoding_format
    assert await embedder_for(openai_server).aembed_documents(["a"]) == [[0.25] * 16]
    openai_server.fail_next(200, body={"data": [{"index": 0, "embedding": "not base64!"}]}, path=EMBEDDINGS)
    with pytest.raises(ProviderResponseError, match="malformed embedding"):
        await embedder_for(openai_server).aembed_documents(["a"])
    openai_server.fail_next(200, body={"data": []}, path=EMBEDDINGS)
    with pytest.raises(ProviderResponseError, match="returned 0 embeddings for 1 inputs"):
        await embedder_for(openai_server).aembed_documents(["a"])


async def test_rate_limits_are_retried_by_the_chain_policy(openai_server):
    openai_server.fail_next(429, times=2, path=EMBEDDINGS)
    chain = Chain([embedder_for(openai_server)], name="embed-retry", retries=2)
    result = await chain.ainvoke({"texts": ["a", "b"]})
    assert result["embeddings"] == [embedding_vector("a", 16), embedding_vector("b", 16)]
    assert len(openai_server.requests_to(EMBEDDINGS)) == 3
