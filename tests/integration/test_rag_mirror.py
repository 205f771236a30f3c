"""Ingest mirrors its source: deleted files' chunks are removed, one identity per file, scoped, crash-safe.

Runs the `rag-ingest` flow (flows/rag_ingest.py) on the embedded store and, through the official
SDK, on the loopback Pinecone server (list-by-prefix, fetch, delete on the wire).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr
from rag_ingest import rag_ingest

from prefect_beluga import rag
from prefect_beluga.blocks import EmbeddedVectorStoreBlock, EmbedderBlock, PineconeCredentials, PineconeVectorStoreBlock
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.vectorstores import InMemoryVectorStore, PineconeVectorStore

FILES = {
    "alpha.md": "# Alpha\n\nAlpha talks about apples and orchards in autumn.\n",
    "bravo.md": "# Bravo\n\nBravo talks about bicycles, brakes and bells.\n",
    "charlie.md": "# Charlie\n\nCharlie talks about cheese, caves and cellars.\n",
}
CHUNKING = {"chunk_size": 12, "chunk_overlap": 0}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


async def embedded_blocks(tmp_path: Path) -> dict[str, str]:
    names = {"embedder_block": f"emb-{uuid.uuid4().hex[:8]}", "vector_store_block": f"store-{uuid.uuid4().hex[:8]}"}
    await EmbedderBlock(provider="hashing", dimension=64).asave(names["embedder_block"])
    await EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz")).asave(names["vector_store_block"])
    return names


async def pinecone_blocks(server) -> dict[str, str]:
    names = {"embedder_block": f"emb-{uuid.uuid4().hex[:8]}", "vector_store_block": f"pc-{uuid.uuid4().hex[:8]}"}
    await EmbedderBlock(provider="hashing", dimension=server.dimension).asave(names["embedder_block"])
    await PineconeVectorStoreBlock(
        host=server.url, namespace="mirror", credentials=PineconeCredentials(api_key=SecretStr("pc-test"))
    ).asave(names["vector_store_block"])
    return names


def embedded_sources(tmp_path: Path) -> dict[str, int]:
    store = InMemoryVectorStore.load(tmp_path / "store.npz")
    counts: dict[str, int] = {}
    for document in store.get_by_ids(store.list_ids()):
        counts[document.metadata["source"]] = counts.get(document.metadata["source"], 0) + 1
    return counts


def pinecone_sources(server) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in server.vectors("mirror").values():
        source = record["metadata"]["source"]
        counts[source] = counts.get(source, 0) + 1
    return counts


def resolved(folder: Path, name: str) -> str:
    return (folder / name).resolve().as_posix()


async def test_a_deleted_file_is_removed_on_reingest_embedded(tmp_path):
    folder = write(tmp_path / "docs", FILES)
    blocks = await embedded_blocks(tmp_path)
    first = await rag_ingest(str(folder), **CHUNKING, **blocks)
    held = embedded_sources(tmp_path)
    assert set(held) == {resolved(folder, n) for n in FILES} and sum(held.values()) == first["chunks"]

    (folder / "bravo.md").unlink()
    again = await rag_ingest(str(folder), **CHUNKING, **blocks)

    assert again["removed"] == held[resolved(folder, "bravo.md")] > 0 and again["written"] == 0
    assert set(embedded_sources(tmp_path)) == {resolved(folder, "alpha.md"), resolved(folder, "charlie.md")}
    store = InMemoryVectorStore.load(tmp_path / "store.npz")
    docs, _ = store.similarity_search_by_query("bicycles brakes bells", 5, HashingEmbedder(64))
    assert all("bravo" not in d.metadata["source"] for d in docs)


async def test_a_deleted_file_is_removed_on_reingest_pinecone(tmp_path, pinecone_server):
    folder = write(tmp_path / "docs", FILES)
    blocks = await pinecone_blocks(pinecone_server)
    await rag_ingest(str(folder), **CHUNKING, **blocks)
    held = pinecone_sources(pinecone_server)
    assert set(held) == {resolved(folder, n) for n in FILES}

    (folder / "bravo.md").unlink()
    (folder / "charlie.md").write_text("# Charlie\n\nShort.\n")  # shrinks to one chunk
    again = await rag_ingest(str(folder), **CHUNKING, **blocks)

    now = pinecone_sources(pinecone_server)
    assert set(now) == {resolved(folder, "alpha.md"), resolved(folder, "charlie.md")}
    assert now[resolved(folder, "charlie.md")] == 1
    assert again["removed"] == held[resolved(folder, "bravo.md")] + held[resolved(folder, "charlie.md")] - 1
    assert pinecone_server.requests_to("/vectors/list"), "stale chunks are found through list-by-prefix"


async def test_prune_false_keeps_a_deleted_files_chunks(tmp_path):
    folder = write(tmp_path / "docs", FILES)
    blocks = await embedded_blocks(tmp_path)
    await rag_ingest(str(folder), **CHUNKING, **blocks)
    (folder / "bravo.md").unlink()
    again = await rag_ingest(str(folder), **CHUNKING, prune=False, **blocks)
    assert again["removed"] == 0
    assert resolved(folder, "bravo.md") in embedded_sources(tmp_path)


async def test_pruning_touches_only_sources_under_the_ingested_folder_or_glob(tmp_path):
    docs = write(tmp_path / "docs", FILES)
    sibling = write(tmp_path / "docs-old", {"delta.md": "# Delta\n\nDelta talks about deltas and rivers.\n"})
    notes = write(docs / "notes", {"n.txt": "Notes about nothing in particular.\n", "skip.csv": "a,b\n1,2\n"})
    blocks = await embedded_blocks(tmp_path)
    await rag_ingest(str(docs), **CHUNKING, **blocks)
    await rag_ingest(str(sibling), **CHUNKING, **blocks)  # a folder whose name starts like docs'
    await rag_ingest(str(notes / "skip.csv"), **CHUNKING, **blocks)  # a file type the folder ingest skips
    before = embedded_sources(tmp_path)
    assert resolved(sibling, "delta.md") in before and resolved(notes, "skip.csv") in before

    # A glob covers only what it matches: deleting alpha.md and re-ingesting *.md leaves notes/n.txt.
    (docs / "alpha.md").unlink()
    report = await rag_ingest(str(docs / "*.md"), **CHUNKING, **blocks)
    after = embedded_sources(tmp_path)
    assert report["removed"] == before[resolved(docs, "alpha.md")]
    assert set(after) == set(before) - {resolved(docs, "alpha.md")}

    # The folder: its text files only; the sibling folder and the .csv stay.
    (notes / "n.txt").unlink()
    report = await rag_ingest(str(docs), **CHUNKING, **blocks)
    assert report["removed"] == before[resolved(notes, "n.txt")]
    assert set(embedded_sources(tmp_path)) == set(after) - {resolved(notes, "n.txt")}


async def test_one_file_under_two_spellings_is_one_set_of_chunks(tmp_path, monkeypatch):
    folder = write(tmp_path / "docs", FILES)
    blocks = await embedded_blocks(tmp_path)
    monkeypatch.chdir(tmp_path)
    relative = await rag_ingest("docs", **CHUNKING, **blocks)
    absolute = await rag_ingest(str(folder.resolve()), **CHUNKING, **blocks)
    dotted = await rag_ingest(f"./docs/../{os.path.basename(folder)}/", **CHUNKING, **blocks)
    assert absolute["written"] == dotted["written"] == 0 and absolute["unchanged"] == relative["chunks"]
    assert sum(embedded_sources(tmp_path).values()) == relative["chunks"]


async def test_a_crash_midway_then_a_rerun_leaves_nothing_stale_or_missing(tmp_path, pinecone_server):
    folder = write(tmp_path / "docs", FILES)
    blocks = await pinecone_blocks(pinecone_server)
    await rag_ingest(str(folder), **CHUNKING, **blocks)
    (folder / "bravo.md").unlink()
    write(folder, {"delta.md": "# Delta\n\nDelta talks about deltas and rivers.\n"})
    want = {resolved(folder, n) for n in ("alpha.md", "charlie.md", "delta.md")}

    # Crash while writing: the upsert is refused (permanent 400), before anything is removed.
    pinecone_server.fail_next(400, path="/vectors/upsert")
    state = await rag_ingest(str(folder), **CHUNKING, **blocks, return_state=True)
    assert state.is_failed() and resolved(folder, "bravo.md") in pinecone_sources(pinecone_server)

    # Crash while removing: the new chunks are written, the delete is refused.
    pinecone_server.fail_next(400, path="/vectors/delete")
    state = await rag_ingest(str(folder), **CHUNKING, **blocks, return_state=True)
    assert state.is_failed() and set(pinecone_sources(pinecone_server)) == want | {resolved(folder, "bravo.md")}

    final = await rag_ingest(str(folder), **CHUNKING, **blocks)
    assert set(pinecone_sources(pinecone_server)) == want and final["written"] == 0
    expected = rag.TokenTextSplitter(**CHUNKING).split_documents(rag.load_documents(folder))
    assert sorted(pinecone_server.vectors("mirror")) == sorted(c.id for c in rag.ingest.with_ids(expected))


async def test_pinecone_store_lists_ids_by_prefix_across_pages(pinecone_server):
    store = PineconeVectorStore(host=pinecone_server.url, api_key="pc-test", namespace="ids")
    from prefect_beluga.schema import Document

    docs = [Document(page_content=f"text {i}", metadata={"n": i}) for i in range(230)]
    ids = [f"a/{i:03d}" for i in range(230)] + ["b/1"]
    store.add_documents(docs + [Document(page_content="other")], HashingEmbedder(pinecone_server.dimension), ids)
    assert store.list_ids("a/") == sorted(ids[:230])
    assert store.list_ids() == sorted(ids)
    assert len(pinecone_server.requests_to("/vectors/list")) >= 3


def test_chunk_ids_share_their_folders_prefix():
    scope = rag.source_scope(Path(__file__).parent)
    source = Path(__file__).resolve().as_posix()
    assert rag.chunk_id(source, 3).startswith(rag.ingest.scope_prefix(scope)) and rag.chunk_id(source, 3).isascii()
    assert not scope.contains(source)  # this file is a .py: not a text file the folder's scope covers
    assert scope.contains(Path(source).with_name("notes.md").as_posix())


@pytest.mark.parametrize("pattern, path, expected", [
    ("/a/*.md", "/a/x.md", True), ("/a/*.md", "/a/b/x.md", False),
    ("/a/**/*.md", "/a/b/c/x.md", True), ("/a/**/*.md", "/a/x.md", True), ("/a/**/*.md", "/b/x.md", False),
])
def test_glob_scope_matches_like_glob(pattern, path, expected):
    scope = rag.SourceScope("glob", "/a", pattern)
    assert scope.contains(path) is expected
