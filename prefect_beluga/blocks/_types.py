"""The block classes: credentials, chat model, embedder and vector stores (see `prefect_beluga.blocks`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

from prefect.blocks.abstract import CredentialsBlock
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from prefect_beluga import llms
from prefect_beluga._openai_client import DEFAULT_BASE_URL
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings import AzureOpenAIEmbedder, Embedder, HashingEmbedder, OpenAIEmbedder
from prefect_beluga.llms.config import http_url
from prefect_beluga.vectorstores import InMemoryVectorStore, PineconeVectorStore, VectorStore

__all__ = [
    "DEFAULT_CHAT_MODEL_BLOCK",
    "DEFAULT_EMBEDDER_BLOCK",
    "DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK",
    "DEFAULT_OPENAI_CREDENTIALS_BLOCK",
    "DEFAULT_PINECONE_CREDENTIALS_BLOCK",
    "DEFAULT_STORE_BLOCK",
    "AzureOpenAICredentials",
    "ChatModelBlock",
    "EmbeddedVectorStoreBlock",
    "EmbedderBlock",
    "OpenAICredentials",
    "PineconeCredentials",
    "PineconeVectorStoreBlock",
    "VectorStoreBlock",
]

#: Names of the block documents `save_default_blocks` creates and the flows load by default.
DEFAULT_CHAT_MODEL_BLOCK = "beluga-chat"
DEFAULT_EMBEDDER_BLOCK = "beluga-embedder"
DEFAULT_STORE_BLOCK = "beluga-store"
DEFAULT_OPENAI_CREDENTIALS_BLOCK = "beluga-openai"
DEFAULT_PINECONE_CREDENTIALS_BLOCK = "beluga-pinecone"
DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK = "beluga-azure-openai"

_OPENAI_LOGO = (
    "https://images.ctfassets.net/gm98wzqotmnx/QE8JwcbZBmIfiognXDLcY/"
    "2bcd4c759f877d37159f576101218b49/open-ai-logo-8B9BFEDC26-seeklogo.com.png?h=250"
)

# -- credentials ------------------------------------------------------------------------------------


class OpenAICredentials(CredentialsBlock):
    """An OpenAI API key, and where to send requests (api.openai.com or a compatible server).

    Referenced by `ChatModelBlock` and `EmbedderBlock`, so one key serves both and is changed in
    one place.

    Examples:
        Load stored OpenAI credentials:
        ```python
        from prefect_beluga.blocks import OpenAICredentials

        openai_credentials = OpenAICredentials.load("BLOCK_NAME")
        client = openai_credentials.get_client()
        ```
    """

    _block_type_name = "Beluga OpenAI Credentials"
    _block_type_slug = "beluga-openai-credentials"
    _logo_url = _OPENAI_LOGO
    _documentation_url = "https://platform.openai.com/docs/api-reference/authentication"

    api_key: SecretStr = Field(default=..., title="API Key", description="The OpenAI API key.")
    base_url: str | None = Field(
        default=None,
        title="Base URL",
        description="API root of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1; empty for api.openai.com.",
    )
    organization: str | None = Field(
        default=None, description="OpenAI organization the requests are billed to; empty for the key's default."
    )

    @field_validator("base_url")
    @classmethod
    def _base_url_http(cls, value: str | None) -> str | None:
        return http_url(value)

    def get_client(self) -> Any:
        """An `openai.OpenAI` client with this key, base URL and organization."""
        import openai

        return openai.OpenAI(
            api_key=self.api_key.get_secret_value(),
            base_url=self.base_url or DEFAULT_BASE_URL,
            organization=self.organization,
        )


class AzureOpenAICredentials(CredentialsBlock):
    """An Azure OpenAI resource: its endpoint, API version and key.

    Referenced by `ChatModelBlock` and `EmbedderBlock` (provider "azure_openai"), whose
    `model_name` is then the deployment name. Without a key, the flow reads
    `AZURE_OPENAI_API_KEY` where it runs (a Microsoft Entra token provider is a callable, which
    a block cannot store: pass it to `llms.Config(azure_ad_token_provider=...)` in code).

    Examples:
        Load stored Azure OpenAI credentials:
        ```python
        from prefect_beluga.blocks import AzureOpenAICredentials

        azure_open_ai_credentials = AzureOpenAICredentials.load("BLOCK_NAME")
        client = azure_open_ai_credentials.get_client()
        ```
    """

    _block_type_name = "Beluga Azure OpenAI Credentials"
    _block_type_slug = "beluga-azure-openai-credentials"
    _logo_url = _OPENAI_LOGO
    _documentation_url = "https://learn.microsoft.com/en-us/azure/ai-foundry/openai/reference"

    azure_endpoint: str = Field(
        default=...,
        title="Endpoint",
        description="The resource endpoint, e.g. https://NAME.openai.azure.com.",
    )
    api_version: str = Field(
        default="2024-10-21", min_length=1, title="API Version", description="The Azure OpenAI API version."
    )
    api_key: SecretStr | None = Field(
        default=None,
        title="API Key",
        description="The resource key; empty reads AZURE_OPENAI_API_KEY where the flow runs.",
    )

    @field_validator("azure_endpoint")
    @classmethod
    def _endpoint_http(cls, value: str) -> str:
        return http_url(value) or value

    def get_client(self) -> Any:
        """An `openai.AzureOpenAI` client for this resource (the SDK's retries are its own here)."""
        import openai

        from prefect_beluga._openai_client import azure_settings

        endpoint, api_version, key = azure_settings(
            endpoint=self.azure_endpoint, api_version=self.api_version, api_key=self.api_key, token_provider=None,
            where="AzureOpenAICredentials",
        )
        return openai.AzureOpenAI(azure_endpoint=endpoint, api_version=api_version, api_key=key.get_secret_value())


class PineconeCredentials(CredentialsBlock):
    """A Pinecone API key.

    Examples:
        Load stored Pinecone credentials:
        ```python
        from prefect_beluga.blocks import PineconeCredentials

        pinecone_credentials = PineconeCredentials.load("BLOCK_NAME")
        pc = pinecone_credentials.get_client()
        ```
    """

    _block_type_name = "Beluga Pinecone Credentials"
    _block_type_slug = "beluga-pinecone-credentials"
    _documentation_url = "https://docs.pinecone.io/guides/projects/manage-api-keys"

    api_key: SecretStr = Field(default=..., title="API Key", description="The Pinecone API key.")

    def get_client(self) -> Any:
        """A `pinecone.Pinecone` client with this key."""
        from pinecone import Pinecone

        return Pinecone(api_key=self.api_key.get_secret_value())


# -- chat model and embedder ------------------------------------------------------------------------


class ChatModelBlock(Block):
    """A chat model's configuration: provider, model and sampling options, and its credentials.

    `get_chat_model()` builds the model through `llms.Factory`, so providers registered with
    `llms.Factory.register` work too. Provider "offline" needs no key and no network; provider
    "openai" without `credentials` reads `OPENAI_API_KEY` where the flow runs.

    Examples:
        Load a stored chat model and ask it something:
        ```python
        from prefect_beluga.blocks import ChatModelBlock

        chat_model_block = ChatModelBlock.load("BLOCK_NAME")
        llm = chat_model_block.get_chat_model()
        print(llm.generate("What is Prefect?").content)
        ```
    """

    _block_type_name = "Beluga Chat Model"
    _block_type_slug = "beluga-chat-model"
    _logo_url = _OPENAI_LOGO
    _documentation_url = "https://platform.openai.com/docs/api-reference/chat"

    provider: str = Field(
        default="offline",
        description=(
            "Provider registered with prefect_beluga.llms.Factory: 'openai', 'azure_openai', 'offline', or your own."
        ),
    )
    model_name: str = Field(
        default="gpt-4o-mini", min_length=1, description="Model name, e.g. gpt-4o-mini; for Azure, the deployment."
    )
    server: str | None = Field(
        default=None,
        description=(
            "OpenAI-compatible server preset (ollama, vllm, groq, gemini, anthropic, compatible); empty for OpenAI."
        ),
    )
    capabilities: dict[str, bool] = Field(
        default_factory=dict, description='Overrides of the preset\'s capabilities, e.g. {"json_schema": false}.'
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Sampling temperature from 0 to 2; empty for the provider's default."
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="Most tokens in a reply; empty for the provider's default."
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds one request may take.")
    options: dict[str, Any] = Field(
        default_factory=dict, description='Further request parameters sent as they are, e.g. {"top_p": 0.9, "seed": 1}.'
    )
    rate_limit: str | None = Field(
        default=None,
        min_length=1,
        description="Prefect rate limit (prefect_beluga.limits.ensure_rate_limit) each request takes a slot of.",
    )
    credentials: AzureOpenAICredentials | OpenAICredentials | None = Field(
        default=None,
        description="Key and address for the provider; empty reads the provider's key variable where the flow runs.",
    )

    def get_chat_model(self) -> llms.ChatModel:
        """The chat model, built with `llms.Factory().create_provider(provider, llms.Config(...))`.

        Raises:
            ValidationError: unknown provider (the message lists the known ones), or the provider
                rejects the configuration (e.g. "openai" without any key).
        """
        options = dict(self.options)
        api_key = base_url = api_version = None
        if isinstance(self.credentials, AzureOpenAICredentials):
            if self.provider != "azure_openai":
                raise ValidationError(
                    f"ChatModelBlock: Azure OpenAI credentials go with provider 'azure_openai', not {self.provider!r}"
                )
            api_key, base_url = self.credentials.api_key, self.credentials.azure_endpoint
            api_version = self.credentials.api_version
        elif self.credentials is not None:
            api_key, base_url = self.credentials.api_key, self.credentials.base_url
            if self.credentials.organization:  # sent as the header the SDK would send
                headers = {**options.get("extra_headers", {}), "OpenAI-Organization": self.credentials.organization}
                options["extra_headers"] = headers
        config = llms.Config(
            provider=self.provider,
            model_name=self.model_name,
            api_key=api_key,
            base_url=base_url,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            timeout=self.timeout,
            options=options,
            rate_limit=self.rate_limit,
            server=self.server,
            capabilities=self.capabilities,
            api_version=api_version,
        )
        return llms.Factory().create_provider(self.provider, config)


class EmbedderBlock(Block):
    """An embedder's configuration: OpenAI's embeddings API, or the offline hashing embedder.

    Use the same embedder for ingesting and for querying a store: the vectors must have the
    store's `dimension`. Provider "hashing" needs no key and no network (it matches words, not
    meanings); its `model_name`, `batch_size` and `max_concurrency` are not used.

    Examples:
        Load a stored embedder and embed a question:
        ```python
        from prefect_beluga.blocks import EmbedderBlock

        embedder_block = EmbedderBlock.load("BLOCK_NAME")
        embedder = embedder_block.get_embedder()
        vector = embedder.embed_query("What is Prefect?")
        ```
    """

    _block_type_name = "Beluga Embedder"
    _block_type_slug = "beluga-embedder"
    _logo_url = _OPENAI_LOGO
    _documentation_url = "https://platform.openai.com/docs/guides/embeddings"

    provider: Literal["hashing", "openai", "azure_openai"] = Field(
        default="hashing",
        description="'openai' for OpenAI's embeddings API, 'azure_openai' for Azure's, 'hashing' for the offline one.",
    )
    model_name: str = Field(
        default="text-embedding-3-small",
        min_length=1,
        description="Embedding model, e.g. text-embedding-3-small; for Azure, the deployment.",
    )
    azure_model: str | None = Field(
        default=None,
        description="Azure: the model the deployment serves (vector size, tokenizer); empty: the deployment name.",
    )
    server: str | None = Field(
        default=None,
        description="OpenAI-compatible server preset (ollama, vllm, gemini, compatible); empty for OpenAI.",
    )
    dimension: int | None = Field(
        default=None,
        ge=1,
        description="Vector length; empty for the model's own (hashing: 384). text-embedding-3 models shorten to it.",
    )
    batch_size: int = Field(default=512, ge=1, le=2048, description="Most texts per embeddings request.")
    max_concurrency: int = Field(default=4, ge=1, description="Most embeddings requests in flight at once.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds one request may take.")
    rate_limit: str | None = Field(
        default=None,
        min_length=1,
        description="Prefect rate limit (prefect_beluga.limits.ensure_rate_limit) each request takes a slot of.",
    )
    credentials: AzureOpenAICredentials | OpenAICredentials | None = Field(
        default=None, description="Key and address; empty reads the provider's key variable where the flow runs."
    )

    def get_embedder(self) -> Embedder:
        """The embedder: `OpenAIEmbedder` or `HashingEmbedder`.

        Raises:
            ValidationError: no OpenAI key, an unknown model without `dimension`, or an
                organization on the credentials (the OpenAI embedder cannot send one yet).
        """
        if self.provider == "hashing":
            return HashingEmbedder() if self.dimension is None else HashingEmbedder(self.dimension)
        credentials = self.credentials
        if self.provider == "azure_openai" or isinstance(credentials, AzureOpenAICredentials):
            if self.provider != "azure_openai" or (credentials is not None
                                                   and not isinstance(credentials, AzureOpenAICredentials)):
                raise ValidationError(
                    "EmbedderBlock: provider 'azure_openai' and AzureOpenAICredentials go together"
                )
            return AzureOpenAIEmbedder(
                self.model_name,
                model=self.azure_model,
                azure_endpoint=credentials.azure_endpoint if credentials else None,
                api_version=credentials.api_version if credentials else None,
                api_key=credentials.api_key if credentials else None,
                dimension=self.dimension,
                batch_size=self.batch_size,
                max_concurrency=self.max_concurrency,
                timeout=self.timeout,
                rate_limit=self.rate_limit,
            )
        if credentials is not None and credentials.organization:
            raise ValidationError(
                "EmbedderBlock: OpenAIEmbedder cannot send an organization; clear `organization` on the "
                "credentials block (requests then use the key's default organization)"
            )
        return OpenAIEmbedder(
            self.model_name,
            api_key=credentials.api_key if credentials else None,
            base_url=credentials.base_url if credentials else None,
            server=self.server,
            dimension=self.dimension,
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            timeout=self.timeout,
            rate_limit=self.rate_limit,
        )


# -- vector stores ----------------------------------------------------------------------------------


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
