"""The tutorial's RetrievalStep and GenerationStep, and the RAG chain built from them.

Examples:
    ```python
    from prefect_beluga.embeddings import HashingEmbedder
    from prefect_beluga.llms import OfflineChatModel
    from prefect_beluga.rag import build_rag_chain
    from prefect_beluga.schema import Document
    from prefect_beluga.vectorstores import InMemoryVectorStore

    store, embedder, llm = InMemoryVectorStore(), HashingEmbedder(), OfflineChatModel()
    store.add_documents([Document(page_content="Prefect is a workflow orchestrator.")], embedder)

    rag = build_rag_chain(store, embedder, llm, k=3, retries=2)
    answer = rag.invoke("What is Prefect?")
    answer["output"], answer["sources"]
    ```
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prefect_beluga.core._checks import check_int
from prefect_beluga.core.config import ConfigLike
from prefect_beluga.core.errors import EmptyStoreWarning, ValidationError
from prefect_beluga.core.fingerprint import fingerprint, key_of, own_cache_key, public_settings
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.embeddings.base import Embedder
from prefect_beluga.llms.base import ChatModel
from prefect_beluga.memory.base import BaseMemory
from prefect_beluga.schema import Document, HumanMessage, SystemMessage

if TYPE_CHECKING:
    from prefect_beluga.orchestration.chain import Chain

__all__ = [
    "GenerationStep",
    "QueryEmbeddingStep",
    "RetrievalStep",
    "build_rag_chain",
    "format_context",
    "source_of",
    "store_identity",
]

logger = logging.getLogger(__name__)

EMPTY_STORE_HINT = (
    "ingest documents first with the same embedder: run the `rag-ingest` deployment "
    "(`prefect deployment run rag-ingest/rag-ingest`) or `python flows/rag_ingest.py FOLDER`"
)


DEFAULT_SYSTEM_PROMPT = (
    "Answer the question using only the numbered context passages below, and cite the "
    "passages you used as [1], [2], ... If they do not contain the answer, say you don't know.\n\n"
    "{context}"
)


def source_of(document: Document) -> str:
    """A citation for a chunk: its `path` relative to the ingested folder (else its `source`), with `#chunk`."""
    source = str(document.metadata.get("path") or document.metadata.get("source", document.id or "unknown"))
    chunk = document.metadata.get("chunk")
    return f"{source}#{chunk}" if chunk is not None else source


def format_context(documents: Sequence[Document]) -> str:
    """Documents as numbered passages: `[1] (source) text`."""
    return "\n\n".join(f"[{n}] ({source_of(d)}) {d.page_content}" for n, d in enumerate(documents, 1))


def _question(state: Any, key: str, where: str) -> str:
    if isinstance(state, str):
        return state
    question = state.get(key) if isinstance(state, Mapping) else None
    if not isinstance(question, str) or not question.strip():
        raise ValidationError(f"{where} needs a non-empty question under {key!r}, got {question!r:.80}")
    return question


def store_identity(store: Any) -> str:
    """What a vector store is, for cache keys: its own `cache_key()`, else its class and public
    settings (index, host, namespace ...; an API key only as a digest). Not its contents: a
    cached retrieval does not see documents ingested since (see docs/cache.md)."""
    key = own_cache_key(store)
    if key is not None:
        return key
    return key_of(f"{type(store).__module__}.{type(store).__qualname__}", settings=public_settings(store))


class QueryEmbeddingStep(Runnable):
    """Embeds the question: `{"query_vector": [float, ...]}` (read by a following `RetrievalStep`).

    A step of its own so that the embedding call can be cached across runs while the search
    itself always reads the store as it is now (`build_rag_chain(cache=True)`).
    """

    def __init__(self, embedder: Embedder, *, query_key: str = "input", name: str = "embed-query") -> None:
        if not isinstance(embedder, Embedder):
            raise ValidationError(f"QueryEmbeddingStep: embedder must be an Embedder, got {type(embedder).__name__}")
        self.embedder, self.query_key, self.name = embedder, query_key, name

    def cache_key(self) -> str:
        return key_of("QueryEmbeddingStep", embedder=self.embedder.cache_key(), query_key=self.query_key)

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> dict[str, Any]:
        question = _question(input, self.query_key, f"step {self.name!r}")
        return {"query_vector": list(await self.embedder.aembed_query(question))}


class RetrievalStep(Runnable):
    """Finds the `k` chunks most similar to the question.

    Output: `{"documents": [Document, ...], "scores": [float, ...], "context": str}`.

    Args:
        store: The vector store to search.
        embedder: Embeds the question (the same embedder that embedded the chunks).
        k: How many chunks to return.
        filter: Metadata filter passed to the store.
        query_key: State key holding the question.
    """

    def __init__(
        self,
        store: Any,
        embedder: Embedder,
        k: int = 4,
        *,
        filter: Mapping[str, Any] | None = None,
        query_key: str = "input",
        name: str = "retrieve",
    ) -> None:
        check_int(k, "RetrievalStep: k", low=1)
        if not isinstance(embedder, Embedder):
            raise ValidationError(f"RetrievalStep: embedder must be an Embedder, got {type(embedder).__name__}")
        self.store, self.embedder, self.k = store, embedder, k
        self.filter, self.query_key, self.name = filter, query_key, name

    def cache_key(self) -> str:
        """Embedder, k, filter, query key and the store's identity (not its contents)."""
        return key_of(
            "RetrievalStep", embedder=self.embedder.cache_key(), store=store_identity(self.store),
            k=self.k, filter=self.filter, query_key=self.query_key,
        )

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> dict[str, Any]:
        question = _question(input, self.query_key, f"step {self.name!r}")
        vector = input.get("query_vector") if isinstance(input, Mapping) else None
        try:
            if vector is not None:  # embedded by a QueryEmbeddingStep before this one
                documents, scores = await self.store.asimilarity_search_by_vector(vector, self.k, filter=self.filter)
            else:
                documents, scores = await self.store.asimilarity_search_by_query(
                    question, self.k, self.embedder, filter=self.filter
                )
        except ValidationError as exc:
            if "dimension" not in str(exc):
                raise
            raise ValidationError(
                f"step {self.name!r}: the store holds nothing for the embedder in use ({exc}); "
                f"re-ingest with this embedder: {EMPTY_STORE_HINT}"
            ) from None
        if not documents:
            what = "holds no chunks passing the filter" if self.filter else "is empty"
            message = (
                f"step {self.name!r}: the vector store {what}, so there is no context to answer from; "
                f"{EMPTY_STORE_HINT}"
            )
            warnings.warn(message, EmptyStoreWarning, stacklevel=2)
            logger.warning(message)
        return {"documents": list(documents), "scores": list(scores), "context": format_context(documents)}


class GenerationStep(Runnable):
    """Answers the question from the retrieved context, citing sources.

    Output: `{"output": str, "sources": [str, ...], "usage": {...}, "model": str}`.

    Args:
        llm: The chat model.
        system_prompt: A template with `{context}` (the numbered passages).
        query_key: State key holding the question.
    """

    def __init__(
        self,
        llm: ChatModel,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        *,
        query_key: str = "input",
        name: str = "generate",
    ) -> None:
        if not isinstance(llm, ChatModel):
            raise ValidationError(f"GenerationStep: llm must be a ChatModel, got {type(llm).__name__}")
        if "{context}" not in system_prompt:
            raise ValidationError("GenerationStep: system_prompt must contain '{context}'")
        self.llm, self.system_prompt, self.query_key, self.name = llm, system_prompt, query_key, name

    def cache_key(self) -> str:
        """The chat model's key, the system prompt and the query key."""
        return key_of(
            "GenerationStep", llm=fingerprint(self.llm), system_prompt=self.system_prompt, query_key=self.query_key
        )

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> dict[str, Any]:
        where = f"step {self.name!r}"
        question = _question(input, self.query_key, where)
        documents = input.get("documents") if isinstance(input, Mapping) else None
        if documents is None:
            raise ValidationError(f"{where} needs 'documents' in its input: run a RetrievalStep before it")
        system = self.system_prompt.replace("{context}", format_context(documents))
        history = input.get("history")
        if history:
            system += f"\n\nConversation so far:\n{history}"
        reply = await self.llm.agenerate([SystemMessage(system), HumanMessage(question)])
        return {
            "output": reply.content,
            "sources": list(dict.fromkeys(source_of(d) for d in documents)),
            "usage": reply.usage.model_dump(),
            "model": reply.model,
        }


def build_rag_chain(
    store: Any,
    embedder: Embedder,
    llm: ChatModel,
    *,
    k: int = 4,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    filter: Mapping[str, Any] | None = None,
    memory: BaseMemory | None = None,
    name: str = "rag",
    cache: bool = False,
    cache_expiration: Any = None,
    **chain_options: Any,
) -> Chain:
    """A two-step Chain — retrieve, then generate — with the chain's retry policy on both.

    With `cache=True` it has three steps: `embed-query` (cached), `retrieve` (the search, never
    cached: it reads the store as it is now) and `generate` (cached). A question asked before, in
    any process sharing Prefect's result storage, then costs no embedding and no model call
    (until `cache_expiration`, a `timedelta`, if given). See docs/cache.md.
    """
    from prefect_beluga.orchestration.chain import Chain  # assembly: rag steps themselves never load Prefect

    retrieve = RetrievalStep(store, embedder, k, filter=filter)
    steps: list[Runnable] = [retrieve, GenerationStep(llm, system_prompt)]
    if cache:
        steps.insert(0, QueryEmbeddingStep(embedder))
    return Chain(
        steps,
        name=name,
        memory=memory,
        cache=("embed-query", "generate") if cache else False,
        cache_expiration=cache_expiration,
        **chain_options,
    )
