"""The offline hashing embedder."""

import json
import math
import subprocess
import sys

import pytest

from prefect_beluga import ValidationError
from prefect_beluga.embeddings import HashingEmbedder


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_vectors_are_normalised_and_identical_texts_match():
    embedder = HashingEmbedder(dimension=64)
    a, b = embedder.embed_documents(["Prefect retries tasks.", "Prefect retries tasks."])
    assert len(a) == 64 and math.isclose(math.sqrt(cosine(a, a)), 1.0, rel_tol=1e-9)
    assert math.isclose(cosine(a, b), 1.0, rel_tol=1e-9)


def test_shared_words_rank_the_relevant_passage_first():
    embedder = HashingEmbedder()
    passages = [
        "Bananas are a yellow fruit rich in potassium.",
        "Machine learning is a field of AI where models learn patterns from data.",
        "The Eiffel tower stands in Paris.",
    ]
    query = embedder.embed_query("What is machine learning?")
    scores = [cosine(query, v) for v in embedder.embed_documents(passages)]
    assert scores.index(max(scores)) == 1 and scores[1] > 0.2


def test_vectors_are_the_same_in_another_process():
    script = (
        "import json; from prefect_beluga.embeddings.hashing import HashingEmbedder; "
        "print('VECTOR', json.dumps(HashingEmbedder(32).embed_text('stable hashing')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stdout.splitlines() if l.startswith("VECTOR "))
    assert json.loads(line[len("VECTOR "):]) == HashingEmbedder(32).embed_text("stable hashing")


def test_bad_input():
    with pytest.raises(ValidationError, match="dimension must be an int >= 8"):
        HashingEmbedder(dimension=2)
    with pytest.raises(ValidationError, match="the query must be a non-empty str"):
        HashingEmbedder().embed_query("  ")
    with pytest.raises(ValidationError, match="item 1 is int, expected str"):
        HashingEmbedder().embed_documents(["ok", 3])
