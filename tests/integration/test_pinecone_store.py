"""PineconeVectorStore through the official pinecone SDK, against the loopback Pinecone server."""

import math
import pickle

import pytest
from pinecone.errors import (
    PineconeConnectionError,
    PineconeTimeoutError,
    RateLimitError,
    ResponseParsingError,
    ServiceError,
    UnauthorizedError,
)
from pydantic import SecretStr

from prefect_beluga import Chain, RunConfig, ValidationError
from prefect_beluga.core.retry import is_permanent, retry_after_of
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.rag import RetrievalStep
from prefect_beluga.schema import Document
from prefect_beluga.testing import PineconeServer
from prefect_beluga.testing.helpers import read_flow_run, read_task_runs
from prefect_beluga.vectorstores import PineconeVectorStore, document_id

UPSERT = "/vectors/upsert"
TOPICS = ["machine learning models learn patterns from data", "Prefect retries failed tasks",
          "bananas are a yellow fruit", "the Eiffel tower stands in Paris", "vector databases store embeddings"]


def corpus(n=250, source="guide.md"):
    return [Document(page_content=f"Chunk {i}: {TOPICS[i % len(TOPICS)]}.",
                     metadata={"source": source, "chunk": i, "topic": i % len(TOPICS), "tags": ["a", f"t{i % 3}"]})
            for i in range(n)]


@pytest.fixture
def embedder():
    return HashingEmbedder(dimension=64)


def store_for(server, **options):
    options.setdefault("dimension", server.dimension)  # skip the describe_index_stats request: exact counts
    return PineconeVectorStore(host=server.url, api_key=SecretStr(server.api_key), **options)


# --- round trip ---------------------------------------------------------------------------------


async def test_round_trip_through_the_sdk(pinecone_server, embedder):
    store = store_for(pinecone_server, namespace="docs")
    docs = corpus(20)
    ids = await store.aadd_documents(docs, embedder)
    assert ids == [document_id(d) for d in docs] and pinecone_server.vector_count("docs") == 20

    found, scores = await store.asimilarity_search_by_query("How does Prefect retry failed tasks?", 3, embedder)
    assert len(found) == 3 and scores == sorted(scores, reverse=True) and scores[0] <= 1.0 + 1e-9
    assert all("Prefect retries failed tasks" in d.get_content() for d in found)
    best = found[0]
    assert best.id in ids and best.metadata["source"] == "guide.md" and best.metadata["tags"][0] == "a"
    assert "text" not in best.metadata  # the text comes back as page_content, not as metadata

    stored = pinecone_server.vectors("docs")[ids[0]]  # what Pinecone holds: the text under text_key
    assert stored["metadata"]["text"] == docs[0].page_content and len(stored["values"]) == 64
    assert math.isclose(sum(v * v for v in stored["values"]), 1.0, rel_tol=1e-6)

    query = pinecone_server.requests_to("/query")[-1]
    assert query.headers["api-key"] == pinecone_server.api_key and "x-pinecone-api-version" in query.headers
    assert query.body["topK"] == 3 and query.body["includeMetadata"] is True and query.body["namespace"] == "docs"

    same, score = await store.asimilarity_search_by_query(docs[4].page_content, 1, embedder)
    assert same[0].id == ids[4] and score[0] == pytest.approx(1.0, abs=1e-6)


def test_sync_api_fetch_delete_and_count(pinecone_server, embedder):
    store = store_for(pinecone_server)
    ids = store.add_documents(corpus(30), embedder)
    assert store.count() == 30
    fetched = store.get_by_ids([ids[3], "missing", ids[1]])
    assert [d.id for d in fetched] == [ids[3], ids[1]] and fetched[0].get_content().startswith("Chunk 3:")
    store.delete(ids[:10] + ["never-stored"])
    assert store.count() == 20 and pinecone_server.vector_count("") == 20
    assert store.get_by_ids(ids[:10]) == []
    docs, _ = store.similarity_search_by_vector(embedder.embed_query("bananas"), 30)
    assert len(docs) == 20 and not set(ids[:10]) & {d.id for d in docs}


async def test_filters_reach_pinecone_unchanged(pinecone_server, embedder):
    store = store_for(pinecone_server)
    await store.aadd_documents(corpus(50), embedder)
    docs, _ = await store.asimilarity_search_by_query("fruit", 50, embedder, filter={"topic": {"$in": [2, 3]}})
    assert docs and {d.metadata["topic"] for d in docs} == {2, 3} and len(docs) == 20
    assert pinecone_server.requests_to("/query")[-1].body["filter"] == {"topic": {"$in": [2, 3]}}
    docs, _ = await store.asimilarity_search_by_query(
        "fruit", 50, embedder, filter={"chunk": {"$gte": 45}, "tags": "t0"}
    )
    assert sorted(d.metadata["chunk"] for d in docs) == [45, 48]
    docs, _ = await store.asimilarity_search_by_query("fruit", 5, embedder, filter={"source": "other.md"})
    assert docs == []
    with pytest.raises(ValidationError, match=r"unknown filter operator '\$regex'"):
        await store.asimilarity_search_by_query("fruit", 5, embedder, filter={"source": {"$regex": ".md"}})
    assert len(pinecone_server.requests_to("/query")) == 3  # the bad filter was not sent


async def test_metadata_is_converted_for_pinecone(pinecone_server, embedder):
    store = store_for(pinecone_server)
    doc = Document(
        page_content="text",
        metadata={"source": "a.md", "page": None, "authors": ("ann", "bob"), "score": 0.5, "draft": False},
    )
    [id_] = await store.aadd_documents([doc], embedder)
    assert pinecone_server.vectors()[id_]["metadata"] == {
        "source": "a.md",
        "authors": ["ann", "bob"],
        "score": 0.5,
        "draft": False,
        "text": "text",
    }
    [back] = await store.aget_by_ids([id_])
    assert back == Document(
        id=id_,
        page_content="text",
        metadata={"source": "a.md", "authors": ["ann", "bob"], "score": 0.5, "draft": False},
    )


async def test_dimension_is_read_from_the_index_once(pinecone_server, embedder):
    store = PineconeVectorStore(host=pinecone_server.url, api_key=pinecone_server.api_key)
    assert store.dimension is None
    await store.aadd_documents(corpus(5), embedder)
    await store.asimilarity_search_by_query("fruit", 1, embedder)
    assert store.dimension == 64 and len(pinecone_server.requests_to("/describe_index_stats")) == 1


# --- deterministic ids: re-ingesting never duplicates -------------------------------------------


async def test_reingesting_does_not_duplicate(pinecone_server, embedder):
    store = store_for(pinecone_server)
    first = await store.aadd_documents(corpus(120), embedder)
    again = await store.aadd_documents(corpus(120), embedder)
    assert again == first and pinecone_server.vector_count("") == 120
    assert len(pinecone_server.requests_to(UPSERT)) == 4  # both ingests reached the server
    edited = [Document(page_content="Chunk 0 rewritten", metadata={"source": "guide.md", "chunk": 0})]
    assert await store.aadd_documents(edited, embedder) == first[:1]
    assert pinecone_server.vector_count("") == 120
    assert pinecone_server.vectors()[first[0]]["metadata"]["text"] == "Chunk 0 rewritten"
    await store.aadd_documents(corpus(10, source="other.md"), embedder)
    assert pinecone_server.vector_count("") == 130


# --- batching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n, batch_size", [(250, 100), (100, 100), (7, 3), (1, 100), (1200, 1000)])
async def test_upserts_are_batched(n, batch_size, pinecone_server, embedder):
    store = store_for(pinecone_server, batch_size=batch_size)
    await store.aadd_documents(corpus(n), embedder)
    upserts = pinecone_server.requests_to(UPSERT)
    assert len(upserts) == math.ceil(n / batch_size)
    sizes = sorted((len(r.body["vectors"]) for r in upserts), reverse=True)
    assert sum(sizes) == n and sizes[0] <= batch_size
    assert pinecone_server.vector_count("") == n
    ids = [v["id"] for r in upserts for v in r.body["vectors"]]
    assert len(ids) == len(set(ids)) == n  # each vector sent exactly once


async def test_large_chunks_are_batched_under_two_megabytes(pinecone_server, embedder):
    store = store_for(pinecone_server, batch_size=1000)
    text = "word " * 7000  # 35 KB of text per vector: 1000 of them would be 35 MB in one request
    docs = [Document(page_content=f"{i} {text}", metadata={"source": "big.md", "chunk": i}) for i in range(150)]
    await store.aadd_documents(docs, embedder)
    upserts = pinecone_server.requests_to(UPSERT)
    assert len(upserts) > 1 and all(len(r.raw) <= 2 * 1024 * 1024 for r in upserts)
    assert sum(len(r.body["vectors"]) for r in upserts) == 150 == pinecone_server.vector_count("")
    assert all(status == 200 for path, status in pinecone_server.responses if path == UPSERT)


async def test_batches_are_sent_concurrently_under_the_limit(embedder):
    with PineconeServer(dimension=64, latency=0.2) as server:
        store = store_for(server, batch_size=10, max_concurrency=3)
        await store.aadd_documents(corpus(90), embedder)
        assert len(server.requests_to(UPSERT)) == 9 and 1 <= server.max_in_flight <= 3
        server.reset(keep_vectors=True)
        store = store_for(server, batch_size=10, max_concurrency=1)
        await store.aadd_documents(corpus(30), embedder)
        assert server.max_in_flight == 1 and server.vector_count("") == 90


async def test_concurrency_is_not_capped_by_asyncios_default_thread_pool(embedder):
    with PineconeServer(dimension=64, latency=0.5) as server:
        store = store_for(server, batch_size=10, max_concurrency=8)  # more than asyncio's default pool on 2 cores
        await store.aadd_documents(corpus(80), embedder)
        assert len(server.requests_to(UPSERT)) == 8 and server.max_in_flight == 8


async def test_the_sdks_own_retries_can_be_turned_back_on(pinecone_server, embedder):
    store = store_for(pinecone_server, sdk_max_retries=2)
    pinecone_server.fail_next(503, path=UPSERT)
    await store.aadd_documents(corpus(5), embedder)  # the SDK retried by itself
    assert [status for path, status in pinecone_server.responses if path == UPSERT] == [503, 200]


# --- namespaces ---------------------------------------------------------------------------------


async def test_namespaces_are_isolated(pinecone_server, embedder):
    handbook, news = store_for(pinecone_server, namespace="handbook"), store_for(pinecone_server, namespace="news")
    handbook_ids = await handbook.aadd_documents(corpus(10), embedder)
    news_ids = await news.aadd_documents(corpus(4, source="news.md"), embedder)
    assert pinecone_server.vector_count("handbook") == 10 and pinecone_server.vector_count("news") == 4
    assert pinecone_server.vector_count("") == 0 and pinecone_server.namespaces == ["handbook", "news"]
    docs, _ = await news.asimilarity_search_by_query("fruit", 10, embedder)
    assert {d.metadata["source"] for d in docs} == {"news.md"} and len(docs) == 4
    assert await news.aget_by_ids(handbook_ids[:2]) == []
    await news.adelete(handbook_ids)  # ids of the other namespace: nothing happens there
    assert pinecone_server.vector_count("handbook") == 10
    await news.adelete(news_ids)
    assert pinecone_server.vector_count("news") == 0 and await handbook.acount() == 10


# --- errors: classified for the Prefect retry policy -------------------------------------------


@pytest.mark.parametrize("status, error", [(500, ServiceError), (503, ServiceError), (429, RateLimitError)])
async def test_transient_http_errors_are_retryable(status, error, pinecone_server, embedder):
    store = store_for(pinecone_server)
    pinecone_server.fail_next(status, retry_after=2 if status == 429 else None)
    with pytest.raises(error) as raised:
        await store.aadd_documents(corpus(5), embedder)
    assert raised.value.status_code == status and not is_permanent(raised.value)
    assert len(pinecone_server.requests_to(UPSERT)) == 1  # the SDK did not retry on its own
    assert any("upsert batch 1 of 1 (5 vectors" in note for note in raised.value.__notes__)
    if status == 429:
        assert retry_after_of(raised.value) == 2.0


async def test_network_failures_are_retryable(pinecone_server, embedder):
    store = store_for(pinecone_server, timeout=0.5)
    await store.aadd_documents(corpus(5), embedder)
    pinecone_server.drop_next(path="/query")
    with pytest.raises(PineconeConnectionError) as dropped:
        await store.asimilarity_search_by_query("fruit", 2, embedder)
    pinecone_server.slow_next(30, path="/query")
    with pytest.raises(PineconeTimeoutError) as timed_out:
        await store.asimilarity_search_by_query("fruit", 2, embedder)
    pinecone_server.malformed_next(path="/query")
    with pytest.raises(ResponseParsingError) as malformed:
        await store.asimilarity_search_by_query("fruit", 2, embedder)
    assert not any(is_permanent(e.value) for e in (dropped, timed_out, malformed))
    assert len(pinecone_server.requests_to("/query")) == 3


async def test_a_wrong_key_is_permanent_and_never_shown(pinecone_server, embedder):
    store = PineconeVectorStore(host=pinecone_server.url, api_key=SecretStr("pc-wrong-key-1234"), dimension=64)
    with pytest.raises(UnauthorizedError) as raised:
        await store.aadd_documents(corpus(5), embedder)
    assert raised.value.status_code == 401 and is_permanent(raised.value)
    shown = str(raised.value) + "".join(raised.value.__notes__) + repr(store)
    assert "pc-wrong-key-1234" not in shown
    assert pinecone_server.vector_count() == 0


async def test_a_failed_batch_loses_nothing_and_a_rerun_duplicates_nothing(pinecone_server, embedder):
    store = store_for(pinecone_server, batch_size=100, max_concurrency=1)
    pinecone_server.drop_next(path=UPSERT, after_apply=True)  # batch 1 lands, its reply is lost
    with pytest.raises(PineconeConnectionError) as raised:
        await store.aadd_documents(corpus(250), embedder)
    assert "batch 1 of 3" in raised.value.__notes__[-1]
    assert pinecone_server.vector_count("") == 100  # stored, although the client saw a failure
    assert len(pinecone_server.requests_to(UPSERT)) == 1  # after a failure no further batch starts
    await store.aadd_documents(corpus(250), embedder)  # what a retry does
    assert pinecone_server.vector_count("") == 250  # all there, none twice


async def test_chain_retries_ingest_through_the_prefect_policy(pinecone_server, embedder, run_name):
    store = store_for(pinecone_server, batch_size=100, max_concurrency=1)
    docs = corpus(250)
    pinecone_server.fail_next(503, path=UPSERT)
    pinecone_server.fail_next(429, path=UPSERT)

    async def ingest(state):
        return {"ids": await store.aadd_documents(docs, embedder)}

    result = await Chain([ingest], name="pinecone-ingest", retries=2).ainvoke({}, RunConfig(run_name=run_name))
    assert len(result["ids"]) == 250 and pinecone_server.vector_count("") == 250
    assert len(pinecone_server.requests_to(UPSERT)) == 3 + 2  # three batches plus two failed attempts
    [task_run] = await read_task_runs((await read_flow_run(run_name)).id, expected=1)
    assert task_run.name == "ingest" and task_run.run_count == 3


async def test_chain_does_not_retry_a_wrong_key(pinecone_server, embedder):
    store = PineconeVectorStore(host=pinecone_server.url, api_key="pc-wrong", dimension=64)

    async def ingest(state):
        return {"ids": await store.aadd_documents(corpus(5), embedder)}

    with pytest.raises(UnauthorizedError):
        await Chain([ingest], name="pinecone-auth", retries=3).ainvoke({})
    assert len(pinecone_server.requests_to(UPSERT)) == 1


async def test_retrieval_step_over_pinecone(pinecone_server, embedder):
    store = store_for(pinecone_server)
    await store.aadd_documents(corpus(25), embedder)
    chain = Chain([RetrievalStep(store, embedder, k=2)], name="pinecone-retrieve")
    result = await chain.ainvoke("Where is the Eiffel tower?")
    assert [d.metadata["topic"] for d in result["documents"]] == [3, 3] and "Eiffel" in result["context"]


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, e: s.asimilarity_search_by_query("  ", 3, e), "the query must be a non-empty str"),
        (lambda s, e: s.asimilarity_search_by_query("q", 0, e), "k must be an int >= 1"),
        (lambda s, e: s.asimilarity_search_by_query("q", 10_001, e), "k must be at most 10000"),
        (
            lambda s, e: s.asimilarity_search_by_vector([0.1] * 32, 3),
            "the query vector has dimension 32, the store holds dimension 64",
        ),
        (lambda s, e: s.asimilarity_search_by_vector([float("nan")] * 64, 3), "contains NaN"),
        (
            lambda s, e: s.aadd_documents([Document(page_content="x", metadata={"nested": {"a": 1}})], e),
            "metadata field 'nested' of document '.*' is a dict; "
            "Pinecone stores strings, numbers, booleans and lists of strings",
        ),
        (
            lambda s, e: s.aadd_documents([Document(page_content="x", metadata={"pages": [1, 2]})], e),
            "metadata field 'pages' .* is a list of int",
        ),
        (
            lambda s, e: s.aadd_documents([Document(page_content="x", metadata={"text": "mine"})], e),
            "has a metadata field 'text', which holds the text",
        ),
        (
            lambda s, e: s.aadd_documents([Document(page_content="y" * 41_000, metadata={"source": "huge.md"})], e),
            "source 'huge.md'.* bytes of metadata with its text; Pinecone allows 40960 per vector",
        ),
        (lambda s, e: s.aadd_documents([Document(page_content="x", id="i" * 513)], e), "longer than 512 characters"),
        (lambda s, e: s.adelete("one-id"), "ids must be a list of str"),
    ],
)
async def test_bad_input_is_a_clear_error_and_sends_nothing(call, message, pinecone_server, embedder):
    store = store_for(pinecone_server)
    docs = corpus(3)
    await store.aadd_documents(docs, embedder)
    before = len(pinecone_server.requests)
    with pytest.raises(ValidationError, match=message):
        await call(store, embedder)
    assert len(pinecone_server.requests) == before and pinecone_server.vector_count("") == 3


async def test_a_bad_document_fails_the_whole_call_before_anything_is_written(pinecone_server, embedder):
    store = store_for(pinecone_server, batch_size=10)
    docs = corpus(50) + [Document(page_content="bad", metadata={"when": object()})]
    with pytest.raises(ValidationError, match="metadata field 'when'"):
        await store.aadd_documents(docs, embedder)
    assert pinecone_server.requests_to(UPSERT) == [] and pinecone_server.vector_count() == 0


async def test_embedder_of_the_wrong_dimension_is_caught_before_embedding(pinecone_server):
    store = PineconeVectorStore(host=pinecone_server.url, api_key=pinecone_server.api_key)  # asks the index
    with pytest.raises(
        ValidationError, match="the embedder HashingEmbedder has dimension 32, the store holds dimension 64"
    ):
        await store.aadd_documents(corpus(3), HashingEmbedder(dimension=32))
    with pytest.raises(ValidationError, match="has dimension 32, the store holds dimension 64"):
        await store.asimilarity_search_by_query("q", 1, HashingEmbedder(dimension=32))
    assert pinecone_server.request_counts == {"/describe_index_stats": 1}


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "pass `index_name` or `host`"),
        ({"host": "h", "batch_size": 0}, "`batch_size` must be an int from 1 to 1000"),
        (
            {"host": "h", "batch_size": 1001},
            "`batch_size` must be an int from 1 to 1000 \\(Pinecone's limit per upsert\\)",
        ),
        ({"host": "h", "max_concurrency": 0}, "`max_concurrency` must be an int from 1 to 64"),
        ({"host": "h", "text_key": ""}, "`text_key` must be a non-empty str"),
        ({"host": "h", "dimension": 0}, "`dimension` must be an int >= 1"),
        ({"host": "h", "timeout": 0}, "`timeout` must be > 0 seconds"),
        ({"host": "h", "namespace": 3}, "`namespace` must be a str"),
        ({"host": "h", "api_key": SecretStr(" ")}, "no Pinecone API key"),
    ],
)
def test_bad_options_are_clear_errors(options, message, monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", "pc-from-env")
    with pytest.raises(ValidationError, match=message):
        PineconeVectorStore(**options)


def test_the_key_comes_from_the_environment_or_is_asked_for(monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", "pc-from-env")
    assert PineconeVectorStore(host="h").api_key.get_secret_value() == "pc-from-env"
    monkeypatch.delenv("PINECONE_API_KEY")
    with pytest.raises(ValidationError, match="pass `api_key=`.* or set the PINECONE_API_KEY environment variable"):
        PineconeVectorStore("my-index")


def test_the_store_pickles_without_its_connection_or_key_in_repr(pinecone_server, embedder):
    store = store_for(pinecone_server, namespace="p")
    store.add_documents(corpus(3), embedder)
    assert store._index is not None and "pc-test" not in repr(store)
    copy = pickle.loads(pickle.dumps(store))
    assert copy._index is None and copy.count() == 3
    assert copy.similarity_search_by_query("fruit", 1, embedder)[0][0].metadata["topic"] == 2
    store.close()
    assert store._index is None and store.count() == 3  # reconnects on use
