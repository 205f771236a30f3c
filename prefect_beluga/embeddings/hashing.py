"""An offline embedder: lexical feature hashing, deterministic across processes."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings.base import Embedder, check_texts

_WORD = re.compile(r"[a-z0-9]+")
# Words too common to say what a text is about.
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i in is it its of on or so "
    "that the their there these this to was were what when where which who why will with you your".split()
)


class HashingEmbedder(Embedder):
    """Embeds text offline by hashing its words and word pairs into `dimension` buckets.

    Lowercased word unigrams and bigrams (common stop words left out) are hashed with BLAKE2b (stable across processes,
    unlike Python's `hash`) into signed buckets, weighted by sublinear term frequency, then
    L2-normalised — so cosine similarity measures shared vocabulary: a question that shares
    words with a passage ranks it above unrelated ones. No network, no model files.

    Args:
        dimension: Length of the vectors.

    Examples:
        >>> embedder = HashingEmbedder(dimension=384)
        >>> vector = embedder.embed_query("What is Prefect?")
    """

    def __init__(self, dimension: int = 384, *, name: str = "hashing-embedder") -> None:
        if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 8:
            raise ValidationError(f"HashingEmbedder: dimension must be an int >= 8, got {dimension!r}")
        self.dimension = dimension
        self.name = name

    def _features(self, text: str) -> Counter[str]:
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
        return Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:])])

    def embed_text(self, text: str) -> list[float]:
        """The vector of one text (all zeros for a text without words)."""
        vector = [0.0] * self.dimension
        for feature, count in self._features(text).items():
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimension
            sign = 1.0 if digest[4] & 1 else -1.0
            weight = 1.0 + math.log(count)
            vector[bucket] += sign * (weight if " " not in feature else 0.5 * weight)
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm else vector

    async def aembed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_text(t) for t in check_texts(texts, where=type(self).__name__)]
