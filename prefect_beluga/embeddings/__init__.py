"""Embedders: the protocol, OpenAI's API (and compatible servers), Azure OpenAI and an offline hashing embedder."""

from prefect_beluga.embeddings.azure import AzureOpenAIEmbedder
from prefect_beluga.embeddings.base import Embedder
from prefect_beluga.embeddings.hashing import HashingEmbedder
from prefect_beluga.embeddings.openai import OpenAIEmbedder

__all__ = ["AzureOpenAIEmbedder", "Embedder", "HashingEmbedder", "OpenAIEmbedder"]
