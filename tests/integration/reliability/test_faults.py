"""Fault injection: 429 with Retry-After, 500, 503, replies slower than the timeout, dropped
connections and malformed JSON, for chat (OpenAIChatModel), embeddings (OpenAIEmbedder) and
Pinecone (PineconeVectorStore), through a chain, a graph and the rag_ingest flow.

Each case injects one fault at the loopback server and asserts the outcome as the server saw it:
success after exactly two attempts at the faulted endpoint (or, where the fault outlasts the
retries, one clear final error naming the problem), and — wherever vectors are written — that the
loopback Pinecone index holds exactly the expected ids, none lost and none twice. Clients time
out after 1 s, slow replies take 2 s, retry delays are 0: the waits that remain are the
server's Retry-After (1 s) and the timeouts themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import rag_ingest as rag_ingest_module
from pinecone.errors import ServiceError
from pydantic import SecretStr
from rag_ingest import rag_ingest

from prefect_beluga import Chain, Graph, llms, rag
from prefect_beluga.blocks import EmbedderBlock, OpenAICredentials, PineconeCredentials, PineconeVectorStoreBlock
from prefect_beluga.core.errors import ProviderResponseError
from prefect_beluga.embeddings import OpenAIEmbedder
from prefect_beluga.llms import OpenAIChatModel
from prefect_beluga.rag.ingest import with_ids
from prefect_beluga.schema import Document
from prefect_beluga.testing.helpers import write_docs
from prefect_beluga.testing.openai_server import OpenAIServer
from prefect_beluga.testing.pinecone_server import PineconeServer
from prefect_beluga.vectorstores import PineconeVectorStore
from prefect_beluga.vectorstores.base import document_id

from .conftest import vectors_cell

CHAT, EMBED, UPSERT = "/v1/chat/completions", "/v1/embeddings", "/vectors/upsert"
DIM = 64  # the loopback Pinecone index's dimension (the pinecone_server fixture)
TIMEOUT = 1.0  # client timeout, seconds
SLOW = 2.0  # a slow reply, seconds: past the timeout
RETRY_AFTER = 1  # seconds asked by a 429
RETRIES = 2  # extra attempts per step / node

Inject = Callable[[Any, str], None]

#: The faults, each injected once at one endpoint (`path`).
FAULTS: dict[str, Inject] = {
    f"429 Retry-After {RETRY_AFTER}s": lambda server, path: server.fail_next(429, retry_after=RETRY_AFTER, path=path),
    "500": lambda server, path: server.fail_next(500, path=path),
    "503": lambda server, path: server.fail_next(503, path=path),
    f"slow reply {SLOW:g}s > timeout {TIMEOUT:g}s": lambda server, path: server.slow_next(SLOW, path=path),
    "dropped connection": lambda server, path: server.drop_next(path=path),
    "malformed JSON": lambda server, path: server.malformed_next(path=path),
}
FAULT_IDS = ["429", "500", "503", "slow", "drop", "malformed"]
PINECONE_FAULTS = {
    **FAULTS,
    "reply lost after the write": lambda server, path: server.drop_next(path=path, after_apply=True),
}
PINECONE_FAULT_IDS = [*FAULT_IDS, "lost-reply"]


def chat_model(server: OpenAIServer) -> OpenAIChatModel:
    return OpenAIChatModel(
        llms.Config(model_name="gpt-4o-mini", api_key="sk-test", base_url=server.base_url, timeout=TIMEOUT)
    )


def embedder_for(server: OpenAIServer) -> OpenAIEmbedder:
    return OpenAIEmbedder(api_key="sk-test", base_url=server.base_url, dimension=DIM, timeout=TIMEOUT)


def store_for(server: PineconeServer, namespace: str, **options: Any) -> PineconeVectorStore:
    return PineconeVectorStore(
        host=server.url, api_key="pc-test", namespace=namespace, dimension=DIM, timeout=TIMEOUT, **options
    )


def corpus(n: int) -> list[Document]:
    return [
        Document(
            page_content=f"Fact {i}: the {i}th fruit is ripe in month {i % 12}.",
            metadata={"source": "facts.md", "chunk": i},
        )
        for i in range(n)
    ]


def check_vectors(server: PineconeServer, namespace: str, expected: set[str]) -> str:
    """Assert the index holds exactly `expected` (none lost, none twice); the table's cell."""
    stored = server.vectors(namespace)
    assert set(stored) == expected, (
        f"lost {sorted(expected - set(stored))[:5]}, extra {sorted(set(stored) - expected)[:5]}"
    )
    assert server.vector_count(namespace) == len(expected)  # ids are unique keys: count == distinct ids
    return vectors_cell(len(expected), server.vector_count(namespace))


def check_gap(server: Any, path: str, fault: str) -> None:
    """For a 429 with Retry-After, the retry came no sooner than asked."""
    if fault.startswith("429"):
        first, second = server.requests_to(path)[:2]
        assert second.at - first.at >= RETRY_AFTER - 0.05, (
            f"retried after {second.at - first.at:.2f}s, Retry-After was {RETRY_AFTER}s"
        )


def namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}"


# --- chat -------------------------------------------------------------------------------------------


def chat_pipeline(path: str, server: OpenAIServer) -> Chain | Graph:
    """The chat model as a chain's step, or as a graph node after a first node."""
    if path == "chain":
        return Chain([chat_model(server)], name="chat-faults", retries=RETRIES, retry_delay=0)
    graph = Graph(name="chat-faults")
    graph.add_node("question", lambda state: {"input": state["input"]})
    graph.add_node("generate", chat_model(server), retries=RETRIES)
    graph.add_edge("question", "generate")
    return graph.set_entry_point(["question"]).set_finish_point(["generate"])


@pytest.mark.parametrize("path", ["chain", "graph"])
@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
async def test_chat(fault, path, openai_server, report):
    FAULTS[fault](openai_server, CHAT)
    result = await chat_pipeline(path, openai_server).ainvoke({"input": "What is AI?"})
    assert result["output"] == "Echo: What is AI?"
    assert len(openai_server.requests_to(CHAT)) == 2
    check_gap(openai_server, CHAT, fault)
    report(component="chat", path=path, fault=fault, attempts=2, outcome="ok")


async def test_chat_final_error_after_the_retries(openai_server, report):
    openai_server.fail_next(503, times=RETRIES + 1, path=CHAT)
    chain = Chain([chat_model(openai_server)], name="chat-exhausted", retries=RETRIES, retry_delay=0)
    with pytest.raises(openai.InternalServerError) as raised:
        await chain.ainvoke({"input": "What is AI?"})
    assert "503" in str(raised.value)
    assert len(openai_server.requests_to(CHAT)) == RETRIES + 1
    report(
        component="chat",
        path="chain",
        fault="503 x3 (outlasts 2 retries)",
        attempts=RETRIES + 1,
        outcome="error: InternalServerError 503",
    )


async def test_chat_wrong_key_is_not_retried(openai_server, report):
    model = OpenAIChatModel(
        llms.Config(
            model_name="gpt-4o-mini", api_key="sk-wrong-key-0000", base_url=openai_server.base_url, timeout=TIMEOUT
        )
    )
    with pytest.raises(openai.AuthenticationError) as raised:
        await Chain([model], name="chat-auth", retries=RETRIES, retry_delay=0).ainvoke({"input": "hi"})
    assert "Incorrect API key" in str(raised.value) and "sk-wrong-key-0000" not in str(raised.value)
    assert len(openai_server.requests_to(CHAT)) == 1
    report(
        component="chat",
        path="chain",
        fault="401 wrong key (permanent)",
        attempts=1,
        outcome="error: AuthenticationError 401",
    )


# --- embeddings and Pinecone: through a chain (one step embeds and upserts) and a graph ----------------


def ingest_chain(
    openai_server: OpenAIServer, pinecone_server: PineconeServer, docs: list[Document], ns: str, **store_options: Any
) -> Chain:
    embedder, store = embedder_for(openai_server), store_for(pinecone_server, ns, **store_options)

    async def ingest(state: dict) -> dict:
        return {"ids": await store.aadd_documents(docs, embedder)}

    return Chain([ingest], name="ingest-faults", retries=RETRIES, retry_delay=0)


def ingest_graph(openai_server: OpenAIServer, pinecone_server: PineconeServer, docs: list[Document], ns: str) -> Graph:
    embedder, store = embedder_for(openai_server), store_for(pinecone_server, ns, batch_size=10, max_concurrency=1)

    async def embed(state: dict) -> dict:
        return {"vectors": await embedder.aembed_documents([d.page_content for d in docs])}

    async def upsert(state: dict) -> dict:
        ids = [document_id(d) for d in docs]
        await store.aupsert(ids, state["vectors"], docs)
        return {"ids": ids}

    graph = Graph(name="ingest-faults")
    graph.add_node("embed", embed, retries=RETRIES).add_node("upsert", upsert, retries=RETRIES)
    graph.add_edge("embed", "upsert").set_entry_point(["embed"]).set_finish_point(["upsert"])
    return graph


def ingest(path: str, openai_server: OpenAIServer, pinecone_server: PineconeServer, docs: list[Document], ns: str):
    """Upserts in batches of 10, one at a time: in one chain step, or in a graph's own node."""
    if path == "chain":
        return ingest_chain(openai_server, pinecone_server, docs, ns, batch_size=10, max_concurrency=1)
    return ingest_graph(openai_server, pinecone_server, docs, ns)


@pytest.mark.parametrize("path", ["chain", "graph"])
@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
async def test_embeddings(fault, path, openai_server, pinecone_server, report):
    docs, ns = corpus(30), namespace()
    FAULTS[fault](openai_server, EMBED)
    result = await ingest(path, openai_server, pinecone_server, docs, ns).ainvoke({})
    expected = {document_id(d) for d in docs}
    assert set(result["ids"]) == expected
    assert len(openai_server.requests_to(EMBED)) == 2 and len(pinecone_server.requests_to(UPSERT)) == 3
    check_gap(openai_server, EMBED, fault)
    report(
        component="embeddings",
        path=path,
        fault=fault,
        attempts=2,
        outcome="ok",
        vectors=check_vectors(pinecone_server, ns, expected),
    )


@pytest.mark.parametrize("path", ["chain", "graph"])
@pytest.mark.parametrize("fault", PINECONE_FAULTS, ids=PINECONE_FAULT_IDS)
async def test_pinecone(fault, path, openai_server, pinecone_server, report):
    """Three upsert batches of 10; the fault hits the first. A lost reply means batch 1 was
    written, the step failed and was retried: the same ids, upserted again, not added."""
    docs, ns = corpus(30), namespace()
    PINECONE_FAULTS[fault](pinecone_server, UPSERT)
    result = await ingest(path, openai_server, pinecone_server, docs, ns).ainvoke({})
    expected = {document_id(d) for d in docs}
    assert set(result["ids"]) == expected
    # a chain's one step is retried whole (embedded again); a graph retries only its upsert node
    assert len(openai_server.requests_to(EMBED)) == {"chain": 2, "graph": 1}[path]
    assert len(pinecone_server.requests_to(UPSERT)) == 1 + 3  # the failed batch, then all three
    check_gap(pinecone_server, UPSERT, fault)
    report(
        component="pinecone",
        path=path,
        fault=fault,
        attempts=2,
        outcome="ok",
        vectors=check_vectors(pinecone_server, ns, expected),
    )


async def test_embeddings_final_error_after_the_retries(openai_server, pinecone_server, report):
    docs, ns = corpus(30), namespace()
    openai_server.malformed_next(times=RETRIES + 1, path=EMBED)
    with pytest.raises(ProviderResponseError, match="not valid JSON"):
        await ingest_graph(openai_server, pinecone_server, docs, ns).ainvoke({})
    assert len(openai_server.requests_to(EMBED)) == RETRIES + 1
    assert pinecone_server.requests_to(UPSERT) == []  # nothing half-written
    report(
        component="embeddings",
        path="graph",
        fault="malformed JSON x3 (outlasts 2 retries)",
        attempts=RETRIES + 1,
        outcome="error: ProviderResponseError: reply is not valid JSON",
        vectors=check_vectors(pinecone_server, ns, set()),
    )


# --- embeddings and Pinecone through the rag_ingest flow (blocks, per-batch task runs) ---------------


DOCS = {
    "prefect.md": "# Prefect\n\nPrefect runs flows made of tasks. A task can be retried by its retry policy. "
    "Results can be persisted, and runs resumed.\n",
    "ml.md": "# Machine learning\n\nMachine learning learns patterns from data. Models are trained on examples "
    "and evaluated on data they have not seen.\n",
}
CHUNK_SIZE = 12


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    return write_docs(tmp_path, DOCS)


def expected_ids(folder: Path) -> set[str]:
    chunks = rag.TokenTextSplitter(CHUNK_SIZE, 0).split_documents(rag.load_documents(str(folder)))
    return {c.id for c in with_ids(chunks)}


@pytest.fixture
def fast_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow's tasks with retry delays of 0 (it waits 2, 10, 30 s); their retry condition,
    which honours Retry-After, is the flow's own."""
    for name in ("find_new_chunks", "embed_and_upsert", "delete_stale_chunks"):
        monkeypatch.setattr(
            rag_ingest_module, name, getattr(rag_ingest_module, name).with_options(retry_delay_seconds=0)
        )


async def ingest_blocks(openai_server: OpenAIServer, pinecone_server: PineconeServer, ns: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {"embedder_block": f"faults-emb-{suffix}", "vector_store_block": f"faults-pc-{suffix}"}
    credentials = OpenAICredentials(api_key=SecretStr("sk-test"), base_url=openai_server.base_url)
    await EmbedderBlock(provider="openai", dimension=DIM, timeout=TIMEOUT, credentials=credentials).asave(
        names["embedder_block"]
    )
    await PineconeVectorStoreBlock(
        host=pinecone_server.url,
        namespace=ns,
        timeout=TIMEOUT,
        credentials=PineconeCredentials(api_key=SecretStr("pc-test")),
    ).asave(names["vector_store_block"])
    return names


@pytest.mark.parametrize("component, path", [("embeddings", EMBED), ("pinecone", UPSERT)])
@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
async def test_ingest_flow(fault, component, path, docs_dir, openai_server, pinecone_server, fast_ingest, report):
    ns = namespace()
    names = await ingest_blocks(openai_server, pinecone_server, ns)
    expected = expected_ids(docs_dir)
    server = openai_server if component == "embeddings" else pinecone_server
    FAULTS[fault](server, path)
    result = await rag_ingest(str(docs_dir), chunk_size=CHUNK_SIZE, chunk_overlap=0, **names)
    assert result["written"] == result["chunks"] == len(expected) >= 4
    assert len(openai_server.requests_to(EMBED)) == 2  # one batch, embedded on both attempts
    assert len(pinecone_server.requests_to(UPSERT)) == (2 if component == "pinecone" else 1)
    check_gap(server, path, fault)
    report(
        component=component,
        path="ingest flow",
        fault=fault,
        attempts=2,
        outcome="ok",
        vectors=check_vectors(pinecone_server, ns, expected),
    )


async def test_ingest_flow_final_error_then_a_rerun(docs_dir, openai_server, pinecone_server, fast_ingest, report):
    """Upserts fail on all four attempts: the flow fails with Pinecone's 503, nothing is stored;
    the next run stores every chunk once."""
    ns = namespace()
    names = await ingest_blocks(openai_server, pinecone_server, ns)
    expected = expected_ids(docs_dir)
    pinecone_server.fail_next(503, times=4, path=UPSERT)
    with pytest.raises(ServiceError) as raised:
        await rag_ingest(str(docs_dir), chunk_size=CHUNK_SIZE, chunk_overlap=0, **names)
    assert raised.value.status_code == 503 and "Service unavailable" in str(raised.value)
    assert len(pinecone_server.requests_to(UPSERT)) == 4 and pinecone_server.vector_count(ns) == 0
    report(
        component="pinecone",
        path="ingest flow",
        fault="503 x4 (outlasts 3 retries)",
        attempts=4,
        outcome="error: ServiceError 503",
        vectors=vectors_cell(0, pinecone_server.vector_count(ns)),
    )
    result = await rag_ingest(str(docs_dir), chunk_size=CHUNK_SIZE, chunk_overlap=0, **names)
    assert result["written"] == len(expected)
    report(
        component="pinecone",
        path="ingest flow",
        fault="(re-run after that failure)",
        attempts=1,
        outcome="ok",
        vectors=check_vectors(pinecone_server, ns, expected),
    )
