"""The Embedder protocol: text in, vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.config import ConfigLike
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.fingerprint import key_of, public_settings, secret_digest
from prefect_beluga.core.runnable import Runnable


class Embedder(Runnable, ABC):
    """Turns texts into vectors of a fixed `dimension`.

    Implement `aembed_documents`; the rest follows. As a Runnable it maps
    `{"texts": [...]}` to `{"embeddings": [...]}` and `{"input": str}` to `{"embedding": [...]}`.

    Examples:
        ```python
        from prefect_beluga.embeddings import HashingEmbedder

        embedder = HashingEmbedder()  # any Embedder: OpenAIEmbedder, AzureOpenAIEmbedder, ...
        vectors = embedder.embed_documents(["a", "b"])
        query_vector = await embedder.aembed_query("what is a?")
        ```
    """

    dimension: int

    def cache_key(self) -> str:
        """What this embedder is, for the cross-run cache: class, its public settings (model,
        dimension, base URL ...) and a one-way digest of its API key (`_api_key`), if any."""
        return key_of(
            f"{type(self).__module__}.{type(self).__qualname__}",
            settings=public_settings(self, exclude=("name",)),
            api_key=secret_digest(getattr(self, "_api_key", None)),
        )

    @abstractmethod
    async def aembed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for `texts`, in order."""

    async def aembed_query(self, text: str) -> list[float]:
        """The vector of one query text."""
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"{type(self).__name__}: the query must be a non-empty str, got {text!r}")
        return (await self.aembed_documents([text]))[0]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return run_sync(self.aembed_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        return run_sync(self.aembed_query(text))

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> dict[str, Any]:
        if isinstance(input, dict) and "texts" in input:
            return {"embeddings": await self.aembed_documents(input["texts"])}
        if isinstance(input, dict) and "input" in input:
            return {"embedding": await self.aembed_query(input["input"])}
        raise ValidationError(
            f"{type(self).__name__} expects {{'texts': [...]}} or {{'input': str}}, got {input!r:.80}"
        )


def check_texts(texts: Sequence[str], *, where: str) -> list[str]:
    """`texts` as a list, or a `ValidationError` naming the first bad item."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValidationError(f"{where}: expected a list of str, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValidationError(f"{where}: item {index} is {type(text).__name__}, expected str")
    return list(texts)


__all__ = ["Embedder", "check_texts"]
