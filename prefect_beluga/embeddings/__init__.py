"""Embedders: the protocol, OpenAI's API and an offline hashing embedder."""

from prefect_beluga.embeddings.base import Embedder

__all__ = ["Embedder"]
from prefect_beluga.embeddings.openai import OpenAIEmbedder  # noqa: E402
__all__ += ["OpenAIEmbedder"]
