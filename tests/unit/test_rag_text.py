"""Splitting and loading text for retrieval (prefect_beluga/rag/splitter.py, loaders.py)."""

from itertools import pairwise

import pytest

from prefect_beluga import ValidationError
from prefect_beluga.rag.loaders import load_documents
from prefect_beluga.rag.splitter import TokenTextSplitter
from prefect_beluga.schema import Document
from prefect_beluga.tokens import count_tokens

TEXT = " ".join(f"Fact {i} says that flows number {i} retry tasks." for i in range(40))


def test_chunks_fit_the_budget_and_overlap_by_whole_sentences():
    splitter = TokenTextSplitter(chunk_size=40, chunk_overlap=15)
    chunks = splitter.split_text(TEXT)
    assert len(chunks) > 5 and all(count_tokens(c) <= 40 for c in chunks)
    for before, after in pairwise(chunks):
        last_sentence = before.split(". ")[-1]
        assert after.startswith(last_sentence.rstrip(".")), (before, after)
    every_fact = " ".join(chunks)
    assert all(f"Fact {i} says" in every_fact for i in range(40))


def test_without_overlap_no_sentence_repeats():
    chunks = TokenTextSplitter(chunk_size=40, chunk_overlap=0).split_text(TEXT)
    assert " ".join(chunks).count("Fact 7 says") == 1


def test_a_sentence_longer_than_a_chunk_is_cut_by_tokens():
    long_sentence = "word " * 300
    chunks = TokenTextSplitter(chunk_size=50, chunk_overlap=0).split_text(long_sentence)
    assert len(chunks) >= 6 and all(count_tokens(c) <= 50 for c in chunks)


def test_split_documents_numbers_chunks_and_keeps_metadata():
    docs = [
        Document(page_content=TEXT, metadata={"source": "a.md"}),
        Document(page_content="Short.", metadata={"source": "b.md"}),
    ]
    chunks = TokenTextSplitter(chunk_size=40, chunk_overlap=0).split_documents(docs)
    a_chunks = [c for c in chunks if c.metadata["source"] == "a.md"]
    assert [c.metadata["chunk"] for c in a_chunks] == list(range(len(a_chunks)))
    assert chunks[-1].metadata == {"source": "b.md", "chunk": 0} and chunks[-1].page_content == "Short."


@pytest.mark.parametrize(
    "options, message",
    [
        ({"chunk_size": 0}, "chunk_size must be an int >= 1"),
        ({"chunk_size": 10, "chunk_overlap": 10}, "chunk_overlap must be an int with 0 <= chunk_overlap < chunk_size"),
    ],
)
def test_bad_splitter_options(options, message):
    with pytest.raises(ValidationError, match=message):
        TokenTextSplitter(**options)


def test_split_rejects_non_text():
    with pytest.raises(ValidationError, match="split_documents: item 0 is str, expected Document"):
        TokenTextSplitter().split_documents(["not a document"])


def test_load_a_folder_a_file_and_a_glob(tmp_path):
    (tmp_path / "guide.md").write_text("# Retries\n\nTasks retry.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("Flows run tasks.")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "empty.txt").write_text("   ")
    docs = load_documents(tmp_path)
    assert [d.metadata["source"] for d in docs] == [str(tmp_path / "guide.md"), str(tmp_path / "sub" / "notes.txt")]
    assert docs[0].metadata["title"] == "Retries"
    assert [d.page_content for d in load_documents(tmp_path / "sub" / "notes.txt")] == ["Flows run tasks."]
    assert len(load_documents(str(tmp_path / "**" / "*.txt"))) == 1


def test_loading_errors_name_the_path(tmp_path):
    with pytest.raises(ValidationError, match="is not a file, a folder or a glob that exists"):
        load_documents(tmp_path / "missing")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValidationError, match="latin1.txt is not UTF-8 text"):
        load_documents(tmp_path)
