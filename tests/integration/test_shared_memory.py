"""Conversation memory shared by workers on several machines, and rag-answer's readable artifact.

The shared store sits on a Prefect filesystem block (`LocalFileSystem` here; `RemoteFileSystem`
reaches S3/GCS through the same fsspec calls). Two processes writing turns of one session at once
both keep every turn: each turn is its own object, so there is no read-modify-write to lose.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.filesystems import LocalFileSystem
from rag_answer import rag_answer
from rag_ingest import rag_ingest

from prefect_beluga import rag
from prefect_beluga.artifacts import answers_markdown
from prefect_beluga.blocks import (
    ChatModelBlock,
    EmbeddedVectorStoreBlock,
    EmbedderBlock,
)
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.memory_blocks import aload_memory_store, memory_store_from_block
from prefect_beluga.vectorstores import InMemoryVectorStore

WRITER = textwrap.dedent("""
    import sys, time
    from prefect.filesystems import LocalFileSystem
    from prefect_beluga.memory_blocks import memory_store_from_block
    basepath, who, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = memory_store_from_block(LocalFileSystem(basepath=basepath))
    while time.time() < start:
        time.sleep(0.005)
    for i in range(25):
        store.append("shared-session", (f"{who}-q{i}", f"{who}-a{i}"))
""")


def test_two_processes_writing_one_session_at_once_keep_every_turn(tmp_path):
    start = time.time() + 3  # both processes start appending at the same moment
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), who, str(start)]) for who in ("a", "b")]
    for writer in writers:
        assert writer.wait(120) == 0
    turns = memory_store_from_block(LocalFileSystem(basepath=str(tmp_path))).load("shared-session")
    assert len(turns) == 50 and len(set(turns)) == 50
    for who in "ab":  # each writer's turns in the order it wrote them
        assert [q for q, _ in turns if q.startswith(who)] == [f"{who}-q{i}" for i in range(25)]


async def test_a_memory_block_is_found_by_name_and_a_missing_one_named(tmp_path):
    name = f"mem-{uuid.uuid4().hex[:8]}"
    await LocalFileSystem(basepath=str(tmp_path)).asave(name)
    store = await aload_memory_store(name, max_turns=7)
    assert store.max_turns == 7 and store.root == str(tmp_path / "beluga-memory")
    assert (await aload_memory_store(f"local-file-system/{name}")).root == store.root
    with pytest.raises(ValidationError, match="no-such-block"):
        await aload_memory_store("no-such-block")


async def offline_blocks(tmp_path: Path) -> dict[str, str]:
    names = {k: f"{k[:4]}-{uuid.uuid4().hex[:8]}" for k in ("embedder_block", "vector_store_block", "chat_model_block")}
    await EmbedderBlock(provider="hashing").asave(names["embedder_block"])
    await EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz")).asave(names["vector_store_block"])
    await ChatModelBlock(provider="offline").asave(names["chat_model_block"])
    return names


async def markdown_of(state) -> str:
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    return next(a.data for a in artifacts if a.key == "rag-answers")


def table_widths(markdown: str) -> list[int]:
    return [line.count(" | ") + 1 for line in markdown.splitlines() if line.startswith("| ")]


async def test_rag_answer_keeps_a_session_in_a_memory_block_and_shows_it(tmp_path):
    folder = tmp_path / "docs"
    (folder / "guide").mkdir(parents=True)
    (folder / "guide" / "retries.md").write_text("# Retries\n\nA Prefect task is retried by its retry policy.\n")
    blocks = await offline_blocks(tmp_path)
    await rag_ingest(
        str(folder), embedder_block=blocks["embedder_block"], vector_store_block=blocks["vector_store_block"]
    )
    memory_block = f"mem-{uuid.uuid4().hex[:8]}"
    await LocalFileSystem(basepath=str(tmp_path / "shared")).asave(memory_block)

    for question in ("How is a task retried?", "And a flow?"):
        state = await rag_answer(question, session_id="alice", memory_block=memory_block, **blocks, return_state=True)
    assert len(memory_store_from_block(LocalFileSystem(basepath=str(tmp_path / "shared"))).load("alice")) == 2
    markdown = await markdown_of(state)
    assert f"session `alice` in SharedMemoryStore(local-file-system/{memory_block})" in markdown
    assert "- `guide/retries.md` chunk 0" in markdown and str(tmp_path) not in markdown
    assert table_widths(markdown) and max(table_widths(markdown)) <= 5


def test_the_answers_table_has_five_short_columns_and_keeps_tokens_and_cost():
    """The UI does not wrap table cells and its artifact pane is ~700 px wide in a 1,280 px window
    (seen in a screenshot): rows stay under ~90 characters; answers and sources go below."""
    answers = [
        {
            "question": f"Question {i}: " + "why " * 30,
            "output": "word " * 200,
            "sources": ["guide/a.md#0", "/old/abs/b.md#3"],
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 100 + i, "completion_tokens": 20},
        }
        for i in range(3)
    ]
    markdown = answers_markdown(answers, session="s1", memory_store="FileMemoryStore(/m)")
    assert table_widths(markdown) == [5] * 5  # header, rule, 3 rows
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert max(len(row) for row in rows) < 90
    assert "| 1 | Question 0: why why why why why why why… | gpt-4o-mini | 100 + 20 |" in markdown
    assert "estimated cost $" in markdown and "session `s1` in FileMemoryStore(/m)" in markdown
    assert markdown.count("- `guide/a.md` chunk 0") == 3 and "- `b.md` chunk 3" in markdown
    assert ("word " * 200).strip() in markdown  # the full answer, below the table


async def test_rag_answer_on_an_empty_store_warns_naming_rag_ingest(tmp_path):
    blocks = await offline_blocks(tmp_path)
    with pytest.warns(rag.EmptyStoreWarning, match="rag-ingest"):
        state = await rag_answer("What is Prefect?", **blocks, return_state=True)
    assert state.is_completed()
    markdown = await markdown_of(state)
    assert "**Warning:**" in markdown and "rag-ingest" in markdown and "empty" in markdown


async def test_retrieval_step_warns_on_an_empty_store_and_names_a_wrong_embedder():
    step = rag.RetrievalStep(InMemoryVectorStore(), HashingEmbedder(32), k=2)
    with pytest.warns(rag.EmptyStoreWarning, match="rag-ingest"):
        assert (await step.ainvoke({"input": "anything"}))["documents"] == []
    store = InMemoryVectorStore()
    from prefect_beluga.schema import Document

    store.add_documents([Document(page_content="text", metadata={"source": "a.md", "chunk": 0})], HashingEmbedder(16))
    with pytest.raises(ValidationError, match="rag-ingest"):
        await rag.RetrievalStep(store, HashingEmbedder(32)).ainvoke({"input": "anything"})
