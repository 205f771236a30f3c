"""Embedders: the protocol, OpenAI's API and an offline hashing embedder."""

from prefect_beluga.embeddings.base import Embedder

__all__ = ["Embedder"]
