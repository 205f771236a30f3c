"""Retrieval-augmented generation: loaders, a token splitter, and the retrieve/generate steps."""

from prefect_beluga.rag.ingest import batched, new_or_changed, stale_ids
from prefect_beluga.rag.loaders import load_documents
from prefect_beluga.rag.splitter import TokenTextSplitter
from prefect_beluga.rag.steps import GenerationStep, RetrievalStep, build_rag_chain, format_context

__all__ = [
    "GenerationStep",
    "RetrievalStep",
    "TokenTextSplitter",
    "batched",
    "build_rag_chain",
    "format_context",
    "load_documents",
    "new_or_changed",
    "stale_ids",
]
