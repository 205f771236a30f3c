"""The deployable flows in flows/: rag_ingest, rag_answer and their artifacts, on blocks.

Offline runs use the hashing embedder, the offline model and the embedded store; the OpenAI and
Pinecone runs go through the official SDKs to the loopback servers.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from pydantic import SecretStr
from rag_answer import rag_answer
from rag_ingest import rag_ingest

from prefect_beluga import memory
from prefect_beluga.blocks import (
    ChatModelBlock,
    EmbeddedVectorStoreBlock,
    EmbedderBlock,
    OpenAICredentials,
    PineconeCredentials,
    PineconeVectorStoreBlock,
)
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.llms import OFFLINE_PREFIX
from prefect_beluga.testing.helpers import write_docs
from prefect_beluga.vectorstores import InMemoryVectorStore

DOCS = {
    "prefect.md": "# Prefect\n\nPrefect runs flows made of tasks. A task can be retried by its retry policy.\n",
    "ml.md": "# Machine learning\n\nMachine learning learns patterns from data. Models are trained on examples.\n",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path, DOCS)


@pytest.fixture
async def offline_blocks(tmp_path: Path) -> dict[str, str]:
    """Block documents for an offline pipeline: hashing embedder, offline model, embedded store."""
    names = {"embedder_block": unique("emb"), "vector_store_block": unique("store"), "chat_model_block": unique("chat")}
    await EmbedderBlock(provider="hashing").asave(names["embedder_block"])
    await EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz")).asave(names["vector_store_block"])
    await ChatModelBlock(provider="offline").asave(names["chat_model_block"])
    return names


async def artifacts_of(flow_run_id: uuid.UUID) -> dict[str, object]:
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key or a.type: a for a in artifacts}


def ingest_options(blocks: dict[str, str]) -> dict[str, str]:
    return {k: blocks[k] for k in ("embedder_block", "vector_store_block")}


async def test_ingest_writes_every_chunk_then_a_rerun_writes_none(docs, offline_blocks, tmp_path):
    first = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0, batch_size=2, **ingest_options(offline_blocks))
    assert first["chunks"] >= 3 and first["written"] == first["chunks"] and first["unchanged"] == 0
    store = InMemoryVectorStore.load(tmp_path / "store.npz")
    assert len(store) == first["chunks"]

    again = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0, batch_size=2, **ingest_options(offline_blocks))
    assert (again["written"], again["unchanged"], again["removed"]) == (0, first["chunks"], 0)
    assert len(InMemoryVectorStore.load(tmp_path / "store.npz")) == first["chunks"]


async def test_ingest_rewrites_an_edited_file_and_drops_its_lost_chunks(docs, offline_blocks, tmp_path):
    (docs / "prefect.md").write_text(
        "# Prefect\n\n" + " ".join(f"Sentence number {i} about Prefect." for i in range(12))
    )
    before = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0, **ingest_options(offline_blocks))
    (docs / "prefect.md").write_text("# Prefect\n\nPrefect is short now.\n")
    after = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0, **ingest_options(offline_blocks))

    assert after["removed"] > 0 and after["written"] >= 1
    stored = InMemoryVectorStore.load(tmp_path / "store.npz")
    assert len(stored) == after["chunks"] == before["chunks"] - after["removed"]
    texts = " ".join(d.page_content for d in stored.get_by_ids(stored._ids))
    assert "Sentence number 11" not in texts and "short now" in texts


async def test_two_ingests_into_one_embedded_store_at_once_both_keep_their_chunks(openai_server, tmp_path):
    """Each run loads the store, then persists after every batch; the embeddings take 1 s each,
    so both runs hold the store at once and persist in turns into the same file."""
    openai_server.latency = 1.0
    credentials = OpenAICredentials(api_key=SecretStr("sk-test"), base_url=openai_server.base_url)
    blocks = {"embedder_block": unique("emb"), "vector_store_block": unique("store")}
    await EmbedderBlock(provider="openai", dimension=16, credentials=credentials).asave(blocks["embedder_block"])
    await EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz")).asave(blocks["vector_store_block"])
    folders = [write_docs(tmp_path / name, {f"{name}-{file}": text for file, text in DOCS.items()}) for name in "ab"]

    reports = await asyncio.gather(
        *(rag_ingest(str(folder), chunk_size=20, chunk_overlap=0, batch_size=1, **blocks) for folder in folders)
    )
    stored = InMemoryVectorStore.load(tmp_path / "store.npz")
    sources = {Path(d.metadata["source"]).name[0] for d in stored.get_by_ids(stored._ids)}
    assert sources == {"a", "b"} and len(stored) == sum(r["written"] for r in reports) > 2


async def test_ingest_artifacts_show_progress_and_a_report(docs, offline_blocks):
    state = await rag_ingest(
        str(docs), chunk_size=20, chunk_overlap=0, batch_size=1, **ingest_options(offline_blocks), return_state=True
    )
    report = await state.result()
    artifacts = await artifacts_of(state.state_details.flow_run_id)
    assert artifacts["rag-ingest-progress"].type == "progress"
    assert artifacts["rag-ingest-progress"].data == 100.0
    assert artifacts["rag-ingest-report"].type == "table"
    assert f'"written": {report["written"]}' in artifacts["rag-ingest-report"].data


async def test_ingest_of_a_missing_folder_fails_naming_it(offline_blocks, tmp_path):
    with pytest.raises(ValidationError, match="nowhere"):
        await rag_ingest(str(tmp_path / "nowhere"), **ingest_options(offline_blocks))


async def test_answer_cites_sources_and_publishes_a_table(docs, offline_blocks):
    await rag_ingest(str(docs), **ingest_options(offline_blocks))
    state = await rag_answer("How is a task retried?", k=1, **offline_blocks, return_state=True)
    answer = await state.result()

    assert answer["output"].startswith(OFFLINE_PREFIX) and "retry policy" in answer["output"]
    assert [Path(s.split("#")[0]).name for s in answer["sources"]] == ["prefect.md"]
    table = (await artifacts_of(state.state_details.flow_run_id))["rag-answers"]
    assert table.type == "markdown" and "How is a task retried?" in table.data and "prefect.md#0" in table.data
    assert "0.000000" in table.data  # the offline model is free, so its cost is known


async def test_answer_remembers_a_session_across_runs(docs, offline_blocks, tmp_path):
    await rag_ingest(str(docs), **ingest_options(offline_blocks))
    memory_dir = tmp_path / "memory"
    for question in ("What is machine learning?", "And Prefect?"):
        await rag_answer(question, session_id="alice", memory_dir=str(memory_dir), **offline_blocks)
    await rag_answer("Unrelated", session_id="bob", memory_dir=str(memory_dir), **offline_blocks)

    turns = memory.FileMemoryStore(memory_dir)
    assert [q for q, _ in turns.load("alice")] == ["What is machine learning?", "And Prefect?"]
    assert [q for q, _ in turns.load("bob")] == ["Unrelated"]


async def test_an_unknown_store_block_is_a_clear_error(offline_blocks):
    with pytest.raises(ValidationError, match="no vector store block named 'no-such-store'"):
        await rag_answer("anything", **{**offline_blocks, "vector_store_block": "no-such-store"})


async def test_openai_and_pinecone_through_blocks(docs, openai_server, pinecone_server):
    """Embeddings and chat through OpenAI's SDK, vectors through Pinecone's, all on loopback."""
    key = SecretStr("sk-test")
    credentials = OpenAICredentials(api_key=key, base_url=openai_server.base_url)
    names = {"embedder_block": unique("emb"), "vector_store_block": unique("pc"), "chat_model_block": unique("chat")}
    await EmbedderBlock(provider="openai", dimension=pinecone_server.dimension, credentials=credentials).asave(
        names["embedder_block"]
    )
    await ChatModelBlock(provider="openai", model_name="gpt-4o-mini", credentials=credentials).asave(
        names["chat_model_block"]
    )
    await PineconeVectorStoreBlock(
        host=pinecone_server.url, namespace="flows", credentials=PineconeCredentials(api_key=SecretStr("pc-test"))
    ).asave(names["vector_store_block"])

    report = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0, **ingest_options(names))
    assert pinecone_server.vector_count("flows") == report["chunks"] == report["written"]
    embedded = len(openai_server.requests_to("/v1/embeddings"))
    again = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0, **ingest_options(names))
    assert again["written"] == 0 and len(openai_server.requests_to("/v1/embeddings")) == embedded

    state = await rag_answer("What is machine learning?", k=2, **names, return_state=True)
    answer = await state.result()
    chat = openai_server.requests_to("/v1/chat/completions")[-1]
    assert chat.body["model"] == "gpt-4o-mini" and answer["usage"]["total_tokens"] > 0
    table = (await artifacts_of(state.state_details.flow_run_id))["rag-answers"]
    assert "gpt-4o-mini" in table.data and "unknown price" not in table.data
