"""The VectorStore protocol and the embedded numpy store."""

import numpy as np
import pytest

from prefect_beluga import ValidationError
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores import InMemoryVectorStore, document_id

TEXTS = [
    "Machine learning (ML) lets computers learn patterns from data.",
    "Prefect orchestrates Python workflows as flows made of tasks.",
    "Bananas are a yellow fruit.",
]


def chunks(source="notes.md"):
    return [Document(page_content=t, metadata={"source": source, "chunk": i, "topic": ["ai", "ops", "food"][i]})
            for i, t in enumerate(TEXTS)]


@pytest.fixture
def embedder():
    return HashingEmbedder(dimension=128)


def test_round_trip_finds_the_relevant_chunk(embedder):
    store = InMemoryVectorStore()
    ids = store.add_documents(chunks(), embedder)
    docs, scores = store.similarity_search_by_query("What is ML?", 2, embedder)
    assert docs[0].get_content() == TEXTS[0] and docs[0].id == ids[0]
    assert docs[0].metadata["source"] == "notes.md" and scores[0] >= scores[1]


def test_reingesting_the_same_chunks_does_not_duplicate(embedder):
    store = InMemoryVectorStore()
    first = store.add_documents(chunks(), embedder)
    assert store.add_documents(chunks(), embedder) == first and len(store) == 3
    assert document_id(chunks()[0]) == first[0]
    store.add_documents(chunks(source="other.md"), embedder)
    assert len(store) == 6


def test_filters_and_delete(embedder):
    store = InMemoryVectorStore()
    ids = store.add_documents(chunks(), embedder)
    docs, _ = store.similarity_search_by_query("fruit", 3, embedder, filter={"topic": {"$in": ["ai", "ops"]}})
    assert {d.metadata["topic"] for d in docs} == {"ai", "ops"}
    docs, _ = store.similarity_search_by_query("fruit", 3, embedder, filter={"topic": "food"})
    assert [d.metadata["topic"] for d in docs] == ["food"]
    store.delete([ids[2], "unknown"])
    assert len(store) == 2 and all(d.metadata["topic"] != "food" for d in store.similarity_search_by_query("fruit", 3, embedder)[0])
    with pytest.raises(ValidationError, match="unknown filter operator '\\$gt'"):
        store.similarity_search_by_query("fruit", 3, embedder, filter={"chunk": {"$gt": 1}})


def test_save_and_load(tmp_path, embedder):
    store = InMemoryVectorStore()
    store.add_documents(chunks(), embedder)
    store.save(tmp_path / "index.npz")
    loaded = InMemoryVectorStore.load(tmp_path / "index.npz")
    assert len(loaded) == 3 and loaded.dimension == 128
    assert loaded.similarity_search_by_query("Prefect flows", 1, embedder)[0][0].get_content() == TEXTS[1]
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left nothing behind
    (tmp_path / "broken.npz").write_bytes(b"not numpy")
    with pytest.raises(ValidationError, match="is not a saved store"):
        InMemoryVectorStore.load(tmp_path / "broken.npz")


def test_memory_per_chunk_allows_100k_chunks_well_under_a_gigabyte():
    store = InMemoryVectorStore(dimension=384)
    rows = 1000
    vectors = np.random.default_rng(0).random((rows, 384))
    docs = [Document(page_content="x" * 800, metadata={"source": "s", "chunk": i}) for i in range(rows)]
    import asyncio

    asyncio.run(store.aupsert([str(i) for i in range(rows)], vectors, docs))
    assert store._matrix.dtype == np.float32
    per_chunk = store._matrix.nbytes / rows + 800 * 2  # vectors + generous text/object overhead
    assert per_chunk * 100_000 < 1024**3 / 2


@pytest.mark.parametrize("call, message", [
    (lambda s, e: s.similarity_search_by_query("", 3, e), "the query must be a non-empty str"),
    (lambda s, e: s.similarity_search_by_query("q", 0, e), "k must be an int >= 1"),
    (lambda s, e: s.similarity_search_by_query("q", 3, HashingEmbedder(dimension=64)), "has dimension 64, the store holds dimension 128"),
    (lambda s, e: s.add_documents(["text"], e), "item 0 is str, expected Document"),
    (lambda s, e: s.add_documents(chunks(), e, ids=["a"]), "1 ids for 3 documents"),
])
def test_bad_input_is_a_clear_error(call, message, embedder):
    store = InMemoryVectorStore()
    store.add_documents(chunks(), embedder)
    with pytest.raises(ValidationError, match=message):
        call(store, embedder)
