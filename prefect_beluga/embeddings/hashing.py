"""An offline embedder: lexical feature hashing, deterministic across processes.

```python
from prefect_beluga.embeddings import HashingEmbedder
embedder = HashingEmbedder(dimension=384)
query = embedder.embed_query("What is machine learning?")
passages = embedder.embed_documents(["Machine learning learns from data.", "Bananas are yellow."])
[round(sum(q * p for q, p in zip(query, v)), 2) for v in passages]  # cosine: vectors are unit length
# -> [0.83, 0.0]
```

No network and no model files: the main job runs on it when no OpenAI key is set. It measures
shared vocabulary, not meaning ("car" and "automobile" are unrelated to it); use a real embedder
(`OpenAIEmbedder`) when synonyms matter.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from prefect_beluga.core import _telemetry
from prefect_beluga.core._checks import check_int
from prefect_beluga.embeddings.base import Embedder, check_texts

# Letters and digits of any script; "_" and punctuation separate words.
_WORD = re.compile(r"[^\W_]+")
# Words too common to say what a text is about (used only when the text has other words).
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i in is it its of on or so "
    "that the their there these this to was were what when where which who why will with you your".split()
)
# Inflections folded together so "retries" matches "retry" and "learning" matches "learn".
# (suffix, replacement, shortest stem kept)
_SUFFIXES = (("sses", "ss", 2), ("ies", "y", 2), ("ied", "y", 2), ("ing", "", 4), ("ed", "", 4), ("s", "", 3))
_BIGRAM_WEIGHT = 0.5


def _stem(word: str) -> str:
    for suffix, replacement, shortest in _SUFFIXES:
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            if len(stem) >= shortest and not (suffix == "s" and stem.endswith(("s", "u", "i"))):
                return stem + replacement
            return word
    return word


@lru_cache(maxsize=1 << 17)
def _bucket(feature: str, dimension: int) -> tuple[int, float]:
    """The bucket and sign of `feature`: BLAKE2b, so the same in every process."""
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=b"beluga-hash").digest()
    return int.from_bytes(digest[:6], "little") % dimension, (1.0 if digest[7] & 1 else -1.0)


class HashingEmbedder(Embedder):
    """Embeds text offline by hashing its words and word pairs into `dimension` signed buckets.

    A text becomes its lowercased words (letters and digits of any script, simple inflections
    folded: "retries" -> "retry"), common stop words left out unless nothing else is left, plus
    the pairs of adjacent words. Each feature is hashed with BLAKE2b (stable across processes and
    machines, unlike Python's salted `hash`) to a bucket and a sign, weighted by sublinear term
    frequency (1 + log tf; pairs count half), and the vector is L2-normalised. Cosine similarity
    then measures shared vocabulary: a question that shares words with a passage ranks it above
    passages it shares none with, and identical texts score 1.

    Args:
        dimension: Length of the vectors (>= 8). More buckets mean fewer hash collisions.
        name: Name of the embedder as a Runnable step.

    Examples:
        Embed chunks and a question for the embedded store:

        ```python
        from prefect_beluga.embeddings import HashingEmbedder
        from prefect_beluga.schema import Document
        from prefect_beluga.vectorstores import InMemoryVectorStore

        store, chunks = InMemoryVectorStore(), [Document(page_content="Prefect runs flows of tasks.")]
        embedder = HashingEmbedder(dimension=384)
        store.add_documents(chunks, embedder)
        docs, scores = store.similarity_search_by_query("What is Prefect?", 3, embedder)
        ```
    """

    def __init__(self, dimension: int = 384, *, name: str = "hashing-embedder") -> None:
        check_int(dimension, "HashingEmbedder: dimension", low=8)
        self.dimension = dimension
        self.name = name

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self.dimension})"

    @staticmethod
    def features(text: str) -> Counter[str]:
        """The features of `text` and how often each occurs: words, then "word word" pairs."""
        words = [_stem(w) for w in _WORD.findall(text.casefold())]
        content = [w for w in words if w not in _STOPWORDS] or words
        return Counter(content + [f"{a} {b}" for a, b in zip(content, content[1:], strict=False)])

    def embed_text(self, text: str) -> list[float]:
        """The vector of one text (all zeros for a text without any word)."""
        vector = [0.0] * self.dimension
        for feature, count in self.features(text).items():
            bucket, sign = _bucket(feature, self.dimension)
            weight = 1.0 + math.log(count)
            vector[bucket] += sign * (weight * _BIGRAM_WEIGHT if " " in feature else weight)
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm else vector

    async def aembed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        texts = check_texts(texts, where=type(self).__name__)
        # An `embeddings` span and metrics when an OpenTelemetry SDK is configured (core/_telemetry.py).
        with _telemetry.embeddings_call(provider="prefect_beluga.hashing", model=f"hashing-{self.dimension}",
                                        inputs=len(texts), dimension=self.dimension):
            return [self.embed_text(t) for t in texts]


__all__ = ["HashingEmbedder"]
