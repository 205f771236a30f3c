"""The VectorStore base (ids, filters, checks) and the embedded numpy store."""

import asyncio
import pickle
import tracemalloc

import numpy as np
import pytest

from prefect_beluga import ValidationError
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores import InMemoryVectorStore, document_id
from prefect_beluga.vectorstores.base import check_filter, matches

TEXTS = [
    "Machine learning (ML) lets computers learn patterns from data.",
    "Prefect orchestrates Python workflows as flows made of tasks.",
    "Bananas are a yellow fruit.",
]


def chunks(source="notes.md"):
    return [
        Document(
            page_content=t, metadata={"source": source, "chunk": i, "topic": ["ai", "ops", "food"][i], "year": 2020 + i}
        )
        for i, t in enumerate(TEXTS)
    ]


@pytest.fixture
def embedder():
    return HashingEmbedder(dimension=128)


# --- deterministic ids --------------------------------------------------------------------------


def test_document_ids_are_deterministic_and_distinct():
    first, second = chunks(), chunks()
    assert [document_id(d) for d in first] == [document_id(d) for d in second]
    assert len({document_id(d) for d in first}) == 3
    assert document_id(Document(page_content="x", id="mine")) == "mine"
    # source + chunk index: the id survives an edit of the chunk's text (re-ingest replaces it)
    edited = Document(page_content="new text", metadata={"source": "notes.md", "chunk": 0})
    assert document_id(edited) == document_id(first[0])
    # a source without chunk indexes: two different texts must not collide
    assert document_id(Document(page_content="a", metadata={"source": "s"})) != document_id(
        Document(page_content="b", metadata={"source": "s"})
    )
    assert document_id(Document(page_content="same")) == document_id(Document(page_content="same"))


# --- filters ------------------------------------------------------------------------------------

META = {"source": "a.md", "year": 2021, "tags": ["ml", "intro"], "draft": False}


@pytest.mark.parametrize(
    "filter, expected",
    [
        ({"source": "a.md"}, True),
        ({"source": {"$eq": "b.md"}}, False),
        ({"source": {"$ne": "b.md"}}, True),
        ({"source": {"$in": ["a.md", "b.md"]}}, True),
        ({"source": {"$nin": ["a.md"]}}, False),
        ({"year": {"$gte": 2021, "$lt": 2022}}, True),
        ({"year": {"$gt": 2021}}, False),
        ({"year": {"$lte": 2020}}, False),
        ({"source": {"$gt": 1}}, False),  # a string is not greater than a number: no match, no error
        ({"tags": "ml"}, True),  # a list field matches through any item
        ({"tags": {"$in": ["intro", "x"]}}, True),
        ({"tags": {"$nin": ["ml"]}}, False),
        ({"title": {"$exists": False}}, True),
        ({"year": {"$exists": True}}, True),
        ({"missing": {"$ne": "x"}}, True),
        ({"draft": False}, True),
        ({"draft": 0}, False),  # booleans are not numbers
        ({"$or": [{"year": 1999}, {"tags": "ml"}]}, True),
        ({"$and": [{"year": 2021}, {"source": "b.md"}]}, False),
        ({"source": "a.md", "year": 1999}, False),  # several fields: all must hold
        ({}, True),
        (None, True),
    ],
)
def test_filter_language(filter, expected):
    check_filter(filter)
    assert matches(META, filter) is expected


@pytest.mark.parametrize(
    "filter, message",
    [
        ({"chunk": {"$regex": "a"}}, r"unknown filter operator '\$regex' for field 'chunk'"),
        ({"$not": {"a": 1}}, r"unknown filter operator '\$not' at the top level"),
        ({"a": {"$in": "abc"}}, r"\$in for field 'a' takes a list"),
        ({"a": {"$gt": "3"}}, r"\$gt for field 'a' takes a number"),
        ({"a": {"$exists": 1}}, r"\$exists for field 'a' takes True or False"),
        ({"$or": []}, r"\$or takes a non-empty list"),
        ({"a": {}}, r"the condition for field 'a' is empty"),
        ({"a": {"nested": 1}}, r"unknown filter operator 'nested'"),
        ({"a": [1, 2]}, r"\$eq for field 'a' takes a single value"),
        ("source=a.md", r"filter must be a dict"),
    ],
)
def test_bad_filters_are_clear_errors(filter, message):
    with pytest.raises(ValidationError, match=message):
        check_filter(filter)


# --- the embedded store -------------------------------------------------------------------------


def test_round_trip_finds_the_relevant_chunk(embedder):
    store = InMemoryVectorStore()
    ids = store.add_documents(chunks(), embedder)
    docs, scores = store.similarity_search_by_query("What is ML?", 2, embedder)
    assert docs[0].get_content() == TEXTS[0] and docs[0].id == ids[0]
    assert docs[0].metadata["source"] == "notes.md" and scores[0] >= scores[1]
    assert len(docs) == 2 and store.dimension == 128
    vector = embedder.embed_query("yellow bananas")
    docs, scores = store.similarity_search_by_vector(vector, 10)
    assert [d.get_content() for d in docs][0] == TEXTS[2] and len(docs) == 3
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0 + 1e-6


def test_identical_text_scores_one(embedder):
    store = InMemoryVectorStore()
    store.add_documents(chunks(), embedder)
    _, scores = store.similarity_search_by_query(TEXTS[1], 1, embedder)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)


def test_reingesting_the_same_chunks_does_not_duplicate(embedder):
    store = InMemoryVectorStore()
    first = store.add_documents(chunks(), embedder)
    assert store.add_documents(chunks(), embedder) == first and len(store) == 3
    assert document_id(chunks()[0]) == first[0]
    # an edited chunk replaces the old one in place
    edited = [
        Document(
            page_content="Deep learning is a kind of machine learning.", metadata={"source": "notes.md", "chunk": 0}
        )
    ]
    assert store.add_documents(edited, embedder) == first[:1] and len(store) == 3
    assert store.get_by_ids(first[:1])[0].get_content().startswith("Deep learning")
    store.add_documents(chunks(source="other.md"), embedder)
    assert len(store) == 6
    # one id twice in one call: the last one wins
    twice = [Document(page_content="v1", id="dup"), Document(page_content="v2", id="dup")]
    store.add_documents(twice, embedder)
    assert len(store) == 7 and store.get_by_ids(["dup"])[0].get_content() == "v2"


def test_explicit_ids(embedder):
    store = InMemoryVectorStore()
    assert store.add_documents(chunks(), embedder, ids=["a", "b", "c"]) == ["a", "b", "c"]
    assert [d.id for d in store.get_by_ids(["c", "nope", "a"])] == ["c", "a"]


def test_filters_and_delete(embedder):
    store = InMemoryVectorStore()
    ids = store.add_documents(chunks(), embedder)
    docs, _ = store.similarity_search_by_query("fruit", 3, embedder, filter={"topic": {"$in": ["ai", "ops"]}})
    assert {d.metadata["topic"] for d in docs} == {"ai", "ops"}
    docs, _ = store.similarity_search_by_query("fruit", 3, embedder, filter={"topic": "food"})
    assert [d.metadata["topic"] for d in docs] == ["food"]
    docs, _ = store.similarity_search_by_query("fruit", 3, embedder, filter={"year": {"$gte": 2021}})
    assert {d.metadata["year"] for d in docs} == {2021, 2022}
    docs, _ = store.similarity_search_by_query("fruit", 3, embedder, filter={"topic": "none"})
    assert docs == []
    store.delete([ids[2], "unknown"])
    assert len(store) == 2 and all(
        d.metadata["topic"] != "food" for d in store.similarity_search_by_query("fruit", 3, embedder)[0]
    )
    assert store.get_by_ids([ids[2]]) == []
    store.delete(ids)
    assert len(store) == 0 and store.similarity_search_by_query("fruit", 3, embedder) == ([], [])
    store.add_documents(chunks(), embedder)  # usable again after emptying
    assert len(store) == 3


def test_save_and_load(tmp_path, embedder):
    store = InMemoryVectorStore()
    ids = store.add_documents(chunks(), embedder)
    store.save(tmp_path / "index.npz")
    loaded = InMemoryVectorStore.load(tmp_path / "index.npz")
    assert len(loaded) == 3 and loaded.dimension == 128
    assert loaded.get_by_ids(ids) == store.get_by_ids(ids)  # text, metadata and ids survive
    assert np.array_equal(loaded.vectors, store.vectors)
    assert loaded.similarity_search_by_query("Prefect flows", 1, embedder)[0][0].get_content() == TEXTS[1]
    assert not [p for p in tmp_path.iterdir() if p.name != "index.npz"]  # the temporary file was renamed
    # the loaded store keeps upsert semantics and can be saved over the old file
    loaded.add_documents(chunks(), embedder)
    loaded.add_documents([Document(page_content="Ünïcödé text ✓", metadata={"source": "u.md"})], embedder)
    loaded.save(tmp_path / "index.npz")
    again = InMemoryVectorStore.load(tmp_path / "index.npz")
    assert (
        len(again) == 4
        and again.similarity_search_by_query("ünïcödé", 1, embedder)[0][0].get_content() == "Ünïcödé text ✓"
    )


def test_save_empty_store(tmp_path):
    InMemoryVectorStore().save(tmp_path / "empty.npz")
    empty = InMemoryVectorStore.load(tmp_path / "empty.npz")
    assert len(empty) == 0 and empty.dimension is None


def test_a_failed_save_keeps_the_previous_file(tmp_path, embedder, monkeypatch):
    store = InMemoryVectorStore()
    store.add_documents(chunks(), embedder)
    store.save(tmp_path / "index.npz")
    before = (tmp_path / "index.npz").read_bytes()
    store.add_documents(chunks("more.md"), embedder)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(tmp_path / "index.npz")
    assert (tmp_path / "index.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["index.npz"]  # no temporary file left behind


def test_loading_something_else_is_a_clear_error(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"not numpy")
    with pytest.raises(ValidationError, match="is not a saved store"):
        InMemoryVectorStore.load(tmp_path / "broken.npz")
    np.savez(tmp_path / "other.npz", vectors=np.zeros((1, 2)))
    with pytest.raises(ValidationError, match="is not a saved store"):
        InMemoryVectorStore.load(tmp_path / "other.npz")
    with pytest.raises(ValidationError, match="no file at"):
        InMemoryVectorStore.load(tmp_path / "missing.npz")


# --- several writers of one file ------------------------------------------------------------


def test_save_changes_keeps_what_another_writer_saved_meanwhile(tmp_path, embedder):
    path = tmp_path / "shared.npz"
    base = InMemoryVectorStore()
    base.add_documents(chunks("base.md"), embedder)
    base.save(path)
    first, second = InMemoryVectorStore.load(path), InMemoryVectorStore.load(path)
    first.add_documents(chunks("first.md"), embedder)
    first.delete([document_id(chunks("base.md")[0])])
    second.add_documents(chunks("second.md"), embedder)
    edited = chunks("base.md")[1].model_copy(update={"page_content": "Prefect runs flows, edited by the second run."})
    second.add_documents([edited], embedder)

    first.save_changes(path)
    second.save_changes(path)  # the file changed since `second` loaded it: merged, not overwritten

    saved = InMemoryVectorStore.load(path)
    sources = sorted(d.metadata["source"] for d in saved.get_by_ids(saved._ids))
    assert sources == ["base.md"] * 2 + ["first.md"] * 3 + ["second.md"] * 3  # base chunk 0 deleted by `first`
    assert saved.get_by_ids([document_id(edited)])[0].page_content.endswith("edited by the second run.")
    # the merged file is now `second`'s contents too, and what a search ranks first
    assert sorted(second._ids) == sorted(saved._ids) and np.array_equal(second.vectors, saved.vectors)
    assert saved.similarity_search_by_query("edited by the second run", 1, embedder)[0][0].id == document_id(edited)


def test_save_changes_of_a_sole_writer_is_save(tmp_path, embedder):
    path = tmp_path / "own.npz"
    store = InMemoryVectorStore()
    store.add_documents(chunks(), embedder)
    store.save_changes(path)  # no file yet
    store.delete([document_id(chunks()[2])])
    store.save_changes(path)  # nobody else wrote it: the file becomes this store
    assert sorted(InMemoryVectorStore.load(path)._ids) == sorted(store._ids) and len(store) == 2


def test_save_changes_refuses_vectors_of_another_dimension(tmp_path, embedder):
    path = tmp_path / "dims.npz"
    wide = InMemoryVectorStore()
    wide.add_documents(chunks(), embedder)
    wide.save(path)
    narrow = InMemoryVectorStore()
    narrow.add_documents(chunks("narrow.md"), HashingEmbedder(dimension=16))
    with pytest.raises(ValidationError, match="dimension"):
        narrow.save_changes(path)
    assert len(InMemoryVectorStore.load(path)) == 3  # the file is untouched


_WRITER = """
import sys
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores import InMemoryVectorStore

path, name = sys.argv[1], sys.argv[2]
embedder = HashingEmbedder(dimension=32)
store = InMemoryVectorStore(32)
for round in range(15):  # each round: one new document, merged into the shared file
    store.add_documents([Document(page_content=f"{name} {round}", metadata={"source": name, "chunk": round})], embedder)
    store.save_changes(path)
"""


def test_processes_saving_one_file_at_once_lose_nothing(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "shared.npz"
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), f"writer{n}"]) for n in range(3)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    saved = InMemoryVectorStore.load(path)
    assert len(saved) == 45 and len(set(saved._ids)) == 45


def test_pickles_and_many_small_upserts(embedder):
    store = InMemoryVectorStore()
    for i in range(300):  # the matrix grows geometrically, not by one copy per call
        store.add_documents([Document(page_content=f"note {i}", metadata={"source": "n", "chunk": i})], embedder)
    assert len(store) == 300 and store.nbytes < 2 * 300 * 128 * 4
    copy = pickle.loads(pickle.dumps(store))
    assert len(copy) == 300 and copy.similarity_search_by_query("note 7", 1, embedder)[0][0].get_content() == "note 7"


async def test_concurrent_upserts_lose_nothing(embedder):
    store = InMemoryVectorStore()
    batches = [
        [Document(page_content=f"text {b}-{i}", metadata={"source": f"s{b}", "chunk": i}) for i in range(50)]
        for b in range(8)
    ]
    await asyncio.gather(*(store.aadd_documents(batch, embedder) for batch in batches))
    assert len(store) == 400 and len(set(store._ids)) == 400


def test_memory_for_100k_chunks_of_dimension_384_is_well_under_a_gigabyte():
    """Measure a few thousand chunks of 800 characters, then scale to 100,000."""
    rows, text = 4000, "x" * 800
    vectors = np.random.default_rng(0).random((rows, 384))
    tracemalloc.start()
    store = InMemoryVectorStore(dimension=384)
    for start in range(0, rows, 500):  # ingested in batches, as add_documents would
        docs = [
            Document(page_content=text[:799] + str(i % 10), metadata={"source": "guide.md", "chunk": i})
            for i in range(start, start + 500)
        ]
        asyncio.run(store.aupsert([document_id(d) for d in docs], vectors[start : start + 500], docs))
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert store.vectors.dtype == np.float32 and store.vectors.shape == (rows, 384)
    held_per_chunk, peak_per_chunk = held / rows, peak / rows  # vectors + text + metadata + ids (+ growth room)
    assert 384 * 4 < held_per_chunk <= peak_per_chunk
    # measured at 100k: ~330 MiB held, ~450 MiB peak while the matrix grows
    assert held_per_chunk * 100_000 < 0.5 * 1024**3, held_per_chunk
    assert peak_per_chunk * 100_000 < 0.75 * 1024**3, peak_per_chunk


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, e: s.similarity_search_by_query("", 3, e), "the query must be a non-empty str"),
        (lambda s, e: s.similarity_search_by_query("q", 0, e), "k must be an int >= 1"),
        (lambda s, e: s.similarity_search_by_query("q", "3", e), "k must be an int >= 1"),
        (
            lambda s, e: s.similarity_search_by_query("q", 3, HashingEmbedder(dimension=64)),
            "the embedder HashingEmbedder has dimension 64, the store holds dimension 128",
        ),
        (
            lambda s, e: s.similarity_search_by_vector([0.1] * 64, 3),
            "the query vector has dimension 64, the store holds dimension 128",
        ),
        (lambda s, e: s.similarity_search_by_query("q", 3, e, filter={"a": {"$bad": 1}}), "unknown filter operator"),
        (
            lambda s, e: s.add_documents(chunks(), HashingEmbedder(dimension=64)),
            "the embedder HashingEmbedder has dimension 64",
        ),
        (lambda s, e: s.add_documents(chunks(), "not an embedder"), "embedder must be an Embedder, got str"),
        (lambda s, e: s.add_documents(["text"], e), "item 0 is str, expected Document"),
        (lambda s, e: s.add_documents(chunks()[0], e), "expected a list of Document, got Document"),
        (lambda s, e: s.add_documents(chunks(), e, ids=["a"]), "1 ids for 3 documents"),
        (lambda s, e: s.add_documents(chunks(), e, ids=["a", "", "c"]), "id 1 is '', expected a non-empty str"),
        (lambda s, e: s.delete("abc"), "ids must be a list of str, got str"),
        (
            lambda s, e: asyncio.run(s.aupsert(["x"], [[float("nan")] * 128], [Document(page_content="x")])),
            "contains NaN",
        ),
        (
            lambda s, e: asyncio.run(s.aupsert(["x", "y"], [[0.1] * 128, [0.1] * 3], [Document(page_content="x")] * 2)),
            "all of the same length",
        ),
    ],
)
def test_bad_input_is_a_clear_error(call, message, embedder):
    store = InMemoryVectorStore()
    store.add_documents(chunks(), embedder)
    with pytest.raises(ValidationError, match=message):
        call(store, embedder)
    assert len(store) == 3  # nothing stored was lost or duplicated


# --- pipelined add_documents: embed slab i + 1 while slab i is upserted ---------------------------


class SlowEmbedder(HashingEmbedder):
    """A HashingEmbedder that takes `delay` per call and logs ("embed", start|end, first text)."""

    def __init__(self, events, delay=0.02, fail_on=None, short_on=None):
        super().__init__(dimension=32)
        self.events, self.delay, self.fail_on, self.short_on = events, delay, fail_on, short_on

    async def aembed_documents(self, texts):
        slab = int(texts[0].split()[1]) // 10 if texts else None
        self.events.append(("embed", "start", slab))
        await asyncio.sleep(self.delay)
        if slab == self.fail_on:
            raise RuntimeError("embedding service down")
        self.events.append(("embed", "end", slab))
        vectors = await super().aembed_documents(texts)
        return vectors[:-1] if slab == self.short_on else vectors


class SlowStore(InMemoryVectorStore):
    """An InMemoryVectorStore whose upserts take `delay` and log ("upsert", start|end, slab)."""

    def __init__(self, events, delay=0.02, fail_on=None):
        super().__init__()
        self.events, self.delay, self.fail_on = events, delay, fail_on

    async def aupsert(self, ids, vectors, documents):
        slab = int(documents[0].page_content.split()[1]) // 10
        self.events.append(("upsert", "start", slab))
        await asyncio.sleep(self.delay)
        if slab == self.fail_on:
            raise ConnectionError(f"upsert of slab {slab} refused")
        await super().aupsert(ids, vectors, documents)
        self.events.append(("upsert", "end", slab))


def numbered(count=50):
    return [
        Document(page_content=f"chunk {i} about topic{i % 7}", metadata={"source": "n.md", "chunk": i})
        for i in range(count)
    ]


def at(events, *event):
    return events.index(event)


async def test_slabs_are_upserted_while_the_next_ones_embed():
    events = []
    store = SlowStore(events)
    ids = await store.aadd_documents(numbered(50), SlowEmbedder(events), slab_size=10)
    assert ids == [document_id(d) for d in numbered(50)] and len(store) == 50
    for slab in range(1, 5):
        # the two stages overlap: slab i embeds while slab i - 1 is being upserted ...
        assert at(events, "embed", "start", slab) < at(events, "upsert", "end", slab - 1)
        assert at(events, "upsert", "start", slab - 1) < at(events, "embed", "end", slab)
        # ... one upsert at a time, and embedding runs at most one slab ahead (memory: two slabs)
        assert at(events, "upsert", "end", slab - 1) < at(events, "upsert", "start", slab)
        if slab >= 2:
            assert at(events, "upsert", "end", slab - 2) < at(events, "embed", "start", slab)


async def test_the_pipeline_takes_about_the_slower_stage_not_the_sum():
    events, delay = [], 0.05
    start = asyncio.get_running_loop().time()
    await SlowStore(events, delay).aadd_documents(numbered(50), SlowEmbedder(events, delay), slab_size=10)
    seconds = asyncio.get_running_loop().time() - start
    assert seconds < 0.9 * 10 * delay  # sequential: 5 embeds + 5 upserts = 0.5 s; pipelined: ~0.3 s


async def test_a_failed_upsert_propagates_unchanged_and_stops_the_embedding():
    events = []
    store = SlowStore(events, delay=0.05, fail_on=1)
    with pytest.raises(ConnectionError, match="upsert of slab 1 refused") as caught:
        await store.aadd_documents(numbered(50), SlowEmbedder(events, delay=0.01), slab_size=10)
    assert type(caught.value) is ConnectionError  # not an ExceptionGroup
    embedded = {slab for kind, when, slab in events if kind == "embed" and when == "start"}
    assert embedded <= {0, 1, 2}  # slab 2 at most was under way when slab 1's upsert failed
    assert len(store) == 10  # slab 0 stays stored; a retry re-upserts it under the same ids
    store.fail_on = None
    assert len(await store.aadd_documents(numbered(50), SlowEmbedder([]), slab_size=10)) == 50
    assert len(store) == 50


async def test_a_failed_embedding_propagates_unchanged_and_cancels_the_upsert():
    events = []
    store = SlowStore(events, delay=0.2)
    with pytest.raises(RuntimeError, match="embedding service down") as caught:
        await store.aadd_documents(numbered(50), SlowEmbedder(events, delay=0.01, fail_on=1), slab_size=10)
    assert type(caught.value) is RuntimeError
    assert ("upsert", "start", 0) in events and ("upsert", "end", 0) not in events  # cancelled
    assert not any(slab and slab > 1 for kind, _, slab in events)


async def test_too_few_vectors_in_a_slab_is_a_clear_error():
    store = SlowStore([], delay=0)
    with pytest.raises(ValidationError, match=r"returned 9 vectors for 10 documents \(documents 20 to 29\)"):
        await store.aadd_documents(numbered(50), SlowEmbedder([], delay=0, short_on=2), slab_size=10)
    assert len(store) <= 20


@pytest.mark.parametrize("slab_size", [1, 7, 50, 1000, None])
def test_slabs_store_exactly_what_one_slab_stores(slab_size):
    embedder = HashingEmbedder(dimension=64)
    whole, slabbed = InMemoryVectorStore(), InMemoryVectorStore()
    explicit = [f"id-{i}" for i in range(50)]
    assert whole.add_documents(numbered(50), embedder, explicit, slab_size=50) == explicit
    assert slabbed.add_documents(numbered(50), embedder, explicit, slab_size=slab_size) == explicit
    assert whole.get_by_ids(explicit) == slabbed.get_by_ids(explicit)
    assert np.array_equal(whole.vectors, slabbed.vectors)


@pytest.mark.parametrize("slab_size", [0, -1, True, 1.5, "10"])
def test_bad_slab_size_is_a_clear_error(slab_size, embedder):
    store = InMemoryVectorStore()
    with pytest.raises(ValidationError, match="slab_size must be an int >= 1 or None"):
        store.add_documents(chunks(), embedder, slab_size=slab_size)
    assert len(store) == 0


def test_default_slab_size_fills_the_embedders_rounds():
    from prefect_beluga.embeddings import OpenAIEmbedder
    from prefect_beluga.vectorstores.base import DEFAULT_SLAB_SIZE, check_slab_size

    assert check_slab_size(None, HashingEmbedder()) == DEFAULT_SLAB_SIZE == 1000
    assert check_slab_size(None, OpenAIEmbedder(api_key="sk-x", batch_size=100, max_concurrency=3)) == 900
    assert check_slab_size(None, OpenAIEmbedder(api_key="sk-x")) == 2048  # 512 x 4: one round at least
    assert check_slab_size(None, OpenAIEmbedder(api_key="sk-x", batch_size=10, max_concurrency=1)) == 1000
    assert check_slab_size(250, OpenAIEmbedder(api_key="sk-x")) == 250
