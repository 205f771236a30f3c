"""The RAG chain: retrieval and generation steps as Prefect task runs."""

import pytest

from prefect_beluga import RunConfig, ValidationError
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.llms import OfflineChatModel
from prefect_beluga.rag import GenerationStep, RetrievalStep, TokenTextSplitter, build_rag_chain, load_documents
from prefect_beluga.testing.helpers import read_flow_run, read_task_runs
from prefect_beluga.vectorstores import InMemoryVectorStore


@pytest.fixture
def store(tmp_path):
    (tmp_path / "ml.md").write_text(
        "# ML\n\nMachine learning (ML) is a field of AI in which models learn patterns from data.\n"
    )
    (tmp_path / "prefect.md").write_text("# Prefect\n\nPrefect retries failed tasks according to their retry policy.\n")
    embedder = HashingEmbedder()
    store = InMemoryVectorStore()
    store.add_documents(
        TokenTextSplitter(chunk_size=60, chunk_overlap=10).split_documents(load_documents(tmp_path)), embedder
    )
    return store, embedder


async def test_rag_chain_answers_from_the_retrieved_context_with_sources(store, run_name):
    vectors, embedder = store
    chain = build_rag_chain(vectors, embedder, OfflineChatModel(), k=1)
    answer = await chain.ainvoke("What is machine learning?", RunConfig(run_name=run_name))
    assert answer["output"].startswith("[offline model]") and "learn patterns from data" in answer["output"]
    assert len(answer["sources"]) == 1 and answer["sources"][0].endswith("ml.md#0")
    assert answer["usage"]["total_tokens"] > 0
    task_runs = await read_task_runs((await read_flow_run(run_name)).id, expected=2)
    assert [t.name for t in task_runs] == ["retrieve", "generate"]


async def test_generation_without_retrieval_is_a_clear_error():
    with pytest.raises(ValidationError, match="needs 'documents' in its input: run a RetrievalStep before it"):
        await GenerationStep(OfflineChatModel()).ainvoke({"input": "q"})


def test_steps_validate_their_options(store):
    vectors, embedder = store
    with pytest.raises(ValidationError, match="k must be an int >= 1"):
        RetrievalStep(vectors, embedder, k=0)
    with pytest.raises(ValidationError, match="system_prompt must contain '{context}'"):
        GenerationStep(OfflineChatModel(), system_prompt="no slot")
