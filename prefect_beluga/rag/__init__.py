"""Retrieval-augmented generation: loaders, a token splitter, and the retrieve/generate steps."""

from prefect_beluga.rag.loaders import load_documents
from prefect_beluga.rag.splitter import TokenTextSplitter

__all__ = ["TokenTextSplitter", "load_documents"]
