"""The offline hashing embedder."""

import json
import math
import os
import subprocess
import sys

import pytest

from prefect_beluga import ValidationError
from prefect_beluga.embeddings import Embedder, HashingEmbedder


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(v):
    return math.sqrt(cosine(v, v))


def test_vectors_are_normalised_and_identical_texts_match():
    embedder = HashingEmbedder(dimension=64)
    a, b = embedder.embed_documents(["Prefect retries tasks.", "Prefect retries tasks."])
    assert len(a) == 64 and math.isclose(norm(a), 1.0, rel_tol=1e-9)
    assert math.isclose(cosine(a, b), 1.0, rel_tol=1e-9)
    assert embedder.embed_query("PREFECT, retries tasks!") == a  # case and punctuation do not matter


def test_shared_words_rank_the_relevant_passage_first():
    embedder = HashingEmbedder()
    passages = [
        "Bananas are a yellow fruit rich in potassium.",
        "Machine learning is a field of AI where models learn patterns from data.",
        "The Eiffel tower stands in Paris.",
        "Prefect schedules flows and retries failed tasks.",
    ]
    for query, relevant in [("What is machine learning?", 1), ("How does Prefect retry a failed task?", 3),
                            ("Where is the Eiffel tower?", 2), ("yellow fruit", 0)]:
        scores = [cosine(embedder.embed_query(query), v) for v in embedder.embed_documents(passages)]
        assert scores.index(max(scores)) == relevant, (query, scores)
        assert scores[relevant] > 0.2
        assert all(abs(s) < scores[relevant] / 2 for i, s in enumerate(scores) if i != relevant), (query, scores)


def test_features_are_words_pairs_and_folded_inflections():
    features = HashingEmbedder.features("The retries of failed tasks")
    assert set(features) == {"retry", "fail", "task", "retry fail", "fail task"}  # stop words left out
    assert HashingEmbedder.features("What is it?")  # only stop words: they are kept, not a zero vector
    assert HashingEmbedder.features("Café naïve 東京 2024") == HashingEmbedder.features("café NAÏVE 東京 2024")
    embedder = HashingEmbedder(dimension=256)
    dog_bites_man, man_bites_dog = embedder.embed_documents(["dog bites man", "man bites dog"])
    assert cosine(dog_bites_man, man_bites_dog) < 0.99  # word order counts, through the pairs
    assert cosine(*embedder.embed_documents(["learning models", "learned model"])) > 0.99


def test_repeated_words_weigh_sublinearly():
    embedder = HashingEmbedder(dimension=1024)
    once, many = embedder.embed_documents(["retry backoff", "retry retry retry retry backoff"])
    # tf 4 weighs 1 + ln 4 = 2.39 times tf 1, not 4 times: backoff keeps a real share of the vector
    assert cosine(once, many) > 0.7


def test_text_without_words_is_the_zero_vector():
    assert HashingEmbedder(dimension=16).embed_documents(["...!?"]) == [[0.0] * 16]


def test_vectors_are_the_same_in_another_process():
    script = (
        "import json; from prefect_beluga.embeddings.hashing import HashingEmbedder; "
        "print('VECTOR', json.dumps(HashingEmbedder(32).embed_text('stable hashing')))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another salt for Python's own hash()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    line = next(text for text in done.stdout.splitlines() if text.startswith("VECTOR "))
    assert json.loads(line[len("VECTOR "):]) == HashingEmbedder(32).embed_text("stable hashing")


async def test_it_is_an_embedder_and_a_runnable():
    embedder = HashingEmbedder(dimension=32)
    assert isinstance(embedder, Embedder) and repr(embedder) == "HashingEmbedder(dimension=32)"
    assert len((await embedder.ainvoke({"texts": ["a b", "c d"]}))["embeddings"]) == 2
    assert (await embedder.ainvoke({"input": "a b"}))["embedding"] == await embedder.aembed_query("a b")


def test_bad_input():
    with pytest.raises(ValidationError, match="dimension must be an int >= 8"):
        HashingEmbedder(dimension=2)
    with pytest.raises(ValidationError, match="dimension must be an int >= 8"):
        HashingEmbedder(dimension=True)
    with pytest.raises(ValidationError, match="the query must be a non-empty str"):
        HashingEmbedder().embed_query("  ")
    with pytest.raises(ValidationError, match="item 1 is int, expected str"):
        HashingEmbedder().embed_documents(["ok", 3])
    with pytest.raises(ValidationError, match="expected a list of str, got str"):
        HashingEmbedder().embed_documents("one text")
