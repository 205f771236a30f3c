"""Retrieval-augmented generation: loaders, a token splitter, and the retrieve/generate steps."""

from prefect_beluga.core.errors import EmptyStoreWarning
from prefect_beluga.rag.ingest import chunk_id, new_or_changed, removed_ids, stale_ids
from prefect_beluga.rag.loaders import SourceScope, load_documents, source_scope
from prefect_beluga.rag.splitter import TokenTextSplitter
from prefect_beluga.rag.steps import GenerationStep, RetrievalStep, build_rag_chain, format_context

__all__ = [
    "EmptyStoreWarning",
    "GenerationStep",
    "RetrievalStep",
    "SourceScope",
    "TokenTextSplitter",
    "build_rag_chain",
    "chunk_id",
    "format_context",
    "load_documents",
    "new_or_changed",
    "removed_ids",
    "source_scope",
    "stale_ids",
]
