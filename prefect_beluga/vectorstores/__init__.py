"""Vector stores: the protocol and the embedded numpy store (the default)."""

from prefect_beluga.vectorstores.base import VectorStore, document_id, matches
from prefect_beluga.vectorstores.inmemory import InMemoryVectorStore

__all__ = ["InMemoryVectorStore", "VectorStore", "document_id", "matches"]
