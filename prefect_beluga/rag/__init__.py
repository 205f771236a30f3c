"""Retrieval-augmented generation: loaders, a token splitter, and the retrieve/generate steps."""

from prefect_beluga.rag.loaders import load_documents
from prefect_beluga.rag.splitter import TokenTextSplitter
from prefect_beluga.rag.steps import GenerationStep, RetrievalStep, build_rag_chain, format_context

__all__ = [
    "GenerationStep",
    "RetrievalStep",
    "TokenTextSplitter",
    "build_rag_chain",
    "format_context",
    "load_documents",
]
