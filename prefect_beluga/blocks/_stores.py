"""Vector store blocks: the embedded store (a file) and Pinecone, both `VectorStoreBlock`s."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from prefect_beluga.blocks._credentials import PineconeCredentials
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.vectorstores import InMemoryVectorStore, PineconeVectorStore, VectorStore


class VectorStoreBlock(Block, ABC):
    """A vector store's configuration. Flows load one by name, whatever its type, with
    `load_vector_store_block(name)`, then call `get_store()` and, after writing, `persist(store)`."""

    @abstractmethod
    def get_store(self) -> VectorStore:
        """The vector store this block configures."""

    def persist(self, store: VectorStore) -> None:
        """Make what was written to `store` durable. Remote stores keep every write: nothing to do."""


class EmbeddedVectorStoreBlock(VectorStoreBlock):
    """The embedded vector store (numpy, in the flow's process), kept in one file between runs.

    `get_store()` reads the file (or starts empty when there is none yet); after adding
    documents, `persist(store)` merges what the store changed into the file, under a file lock,
    and writes it atomically: two runs ingesting at once both keep their documents. The file
    lives on one machine: use it for local runs and workers on that machine, and
    `PineconeVectorStoreBlock` when several machines share the store.

    Examples:
        Load the store, add documents and keep them:
        ```python
        from prefect_beluga.blocks import EmbeddedVectorStoreBlock

        embedded_vector_store_block = EmbeddedVectorStoreBlock.load("BLOCK_NAME")
        store = embedded_vector_store_block.get_store()
        store.add_documents(chunks, embedder)
        embedded_vector_store_block.persist(store)
        ```
    """

    _block_type_name = "Beluga Embedded Vector Store"
    _block_type_slug = "beluga-embedded-vector-store"
    _documentation_url = "https://docs.prefect.io/v3/develop/blocks"

    path: str = Field(
        default=...,
        min_length=1,
        description="File the store is read from and saved to (.npz), on the machine that runs the flow.",
    )
    dimension: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Vector length of the embedder used with this store; a file of another length is refused. Empty: any."
        ),
    )

    def get_store(self) -> InMemoryVectorStore:
        """The store saved at `path`, or an empty one if there is no file yet.

        Raises:
            ValidationError: the file is not a saved store, or holds vectors of another dimension.
        """
        if not Path(self.path).exists():
            return InMemoryVectorStore(self.dimension)
        store = InMemoryVectorStore.load(self.path)
        self._check_dimension(store)
        return store

    def persist(self, store: VectorStore) -> None:
        """Merge what `store` changed since `get_store()` (or the last persist) into the file at `path`.

        Atomic (a crash leaves the previous file whole) and locked: what other runs persisted
        meanwhile is kept; see `InMemoryVectorStore.save_changes`.
        """
        if not isinstance(store, InMemoryVectorStore):
            raise ValidationError(
                f"EmbeddedVectorStoreBlock.persist: expected an InMemoryVectorStore, got {type(store).__name__}"
            )
        self._check_dimension(store)
        store.save_changes(self.path)

    def _check_dimension(self, store: InMemoryVectorStore) -> None:
        if self.dimension is not None and store.dimension is not None and store.dimension != self.dimension:
            raise ValidationError(
                f"EmbeddedVectorStoreBlock: the store at {self.path} holds vectors of dimension {store.dimension}, "
                f"the block expects {self.dimension}; point `path` at a new file (and ingest again) or set "
                "`dimension` to match the embedder the store was built with"
            )


class PineconeVectorStoreBlock(VectorStoreBlock):
    """A namespace of a Pinecone index, through the official SDK.

    The index must exist, with the `cosine` metric and the embedder's dimension. Give its name
    (resolved to its host once, through Pinecone's control plane) or its host directly.

    Examples:
        Load the store and search it:
        ```python
        from prefect_beluga.blocks import PineconeVectorStoreBlock

        pinecone_vector_store_block = PineconeVectorStoreBlock.load("BLOCK_NAME")
        store = pinecone_vector_store_block.get_store()
        docs, scores = store.similarity_search_by_query("What is Prefect?", 3, embedder)
        ```
    """

    _block_type_name = "Beluga Pinecone Vector Store"
    _block_type_slug = "beluga-pinecone-vector-store"
    _documentation_url = "https://docs.pinecone.io/guides/index-data/upsert-data"

    index_name: str | None = Field(default=None, description="Name of the Pinecone index; not needed when host is set.")
    host: str | None = Field(
        default=None, description="The index's data-plane host, e.g. docs-abc123.svc.aped-4627-b74a.pinecone.io."
    )
    namespace: str = Field(
        default="", max_length=512, description="Namespace to read and write; empty for the default one."
    )
    credentials: PineconeCredentials = Field(default=..., description="The Pinecone API key.")
    batch_size: int = Field(default=100, ge=1, le=1000, description="Most vectors per upsert request.")
    max_concurrency: int = Field(default=4, ge=1, le=64, description="Most upsert requests in flight at once.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds one request to the index may take.")

    @model_validator(mode="after")
    def _index_or_host(self) -> PineconeVectorStoreBlock:
        if not self.index_name and not self.host:
            raise ValueError("set `index_name` or `host` (the index's data-plane host)")
        return self

    def get_store(self) -> PineconeVectorStore:
        """The `PineconeVectorStore` on this index and namespace (connects on first use)."""
        return PineconeVectorStore(
            self.index_name,
            host=self.host,
            api_key=self.credentials.api_key,
            namespace=self.namespace,
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            timeout=self.timeout,
        )



__all__ = ["EmbeddedVectorStoreBlock", "PineconeVectorStoreBlock", "VectorStoreBlock"]
