"""Prefect blocks: credentials, chat model, embedder and vector stores as saved configuration.

A deployment keeps its configuration in the Prefect API, not in code: save the blocks once (the
UI's Blocks page, `python blocks/create_blocks.py`, or `save_default_blocks()`), and every flow
run, on any worker, loads them by name and gets working components back:

    >>> from prefect import flow
    >>> from prefect_beluga import rag
    >>> from prefect_beluga.blocks import ChatModelBlock, EmbedderBlock, load_vector_store_block
    >>> @flow
    ... async def answer(question: str) -> str:
    ...     llm = (await ChatModelBlock.aload("beluga-chat")).get_chat_model()
    ...     embedder = (await EmbedderBlock.aload("beluga-embedder")).get_embedder()
    ...     store = (await load_vector_store_block("beluga-store")).get_store()
    ...     return (await rag.build_rag_chain(store, embedder, llm).ainvoke(question))["output"]

Saving them by hand, with the key in a credentials block that the others reference:

    >>> from pydantic import SecretStr
    >>> from prefect_beluga.blocks import ChatModelBlock, OpenAICredentials
    >>> credentials = OpenAICredentials(api_key=SecretStr("sk-..."))
    >>> credentials.save("beluga-openai")
    >>> ChatModelBlock(provider="openai", model_name="gpt-4o-mini", credentials=credentials).save("beluga-chat")

Block types (register them for the UI with `prefect block register -m prefect_beluga.blocks`):

    slug                           class                       builds
    beluga-openai-credentials      OpenAICredentials           openai.OpenAI (get_client)
    beluga-pinecone-credentials    PineconeCredentials         pinecone.Pinecone (get_client)
    beluga-chat-model              ChatModelBlock              llms.ChatModel (get_chat_model)
    beluga-embedder                EmbedderBlock               embeddings.Embedder (get_embedder)
    beluga-embedded-vector-store   EmbeddedVectorStoreBlock    vectorstores.InMemoryVectorStore (get_store)
    beluga-pinecone-vector-store   PineconeVectorStoreBlock    vectorstores.PineconeVectorStore (get_store)

Both vector store blocks derive from `VectorStoreBlock` (`get_store()`, `persist(store)`), so a
flow takes "the vector store block called X" whatever its type: `load_vector_store_block(X)`.

`save_default_blocks()` creates the documents a deployment needs from environment variables,
idempotently, under the names `DEFAULT_CHAT_MODEL_BLOCK` ("beluga-chat"),
`DEFAULT_EMBEDDER_BLOCK` ("beluga-embedder"), `DEFAULT_STORE_BLOCK` ("beluga-store"),
`DEFAULT_OPENAI_CREDENTIALS_BLOCK` ("beluga-openai") and `DEFAULT_PINECONE_CREDENTIALS_BLOCK`
("beluga-pinecone"):

    OPENAI_API_KEY              OpenAI chat model and embedder; unset: the offline model and the
                                hashing embedder (no key, no network)
    OPENAI_BASE_URL             an OpenAI-compatible server instead of api.openai.com
    BELUGA_CHAT_MODEL           chat model name (default "gpt-4o-mini")
    BELUGA_EMBEDDING_MODEL      OpenAI embedding model (default "text-embedding-3-small")
    BELUGA_EMBEDDING_DIMENSION  vector length (default: the Pinecone index's, else the embedder's own)
    PINECONE_API_KEY            a Pinecone store, on PINECONE_INDEX (name) or PINECONE_HOST (host),
                                in PINECONE_NAMESPACE; unset: the embedded store
    BELUGA_STORE_PATH           file of the embedded store (default: under PREFECT_HOME/beluga/,
                                one file per embedder, so vectors of two embedders never mix)

Keys live in `SecretStr` fields: reprs, logs and `model_dump_json()` show `'**********'`, the API
stores them encrypted and reads them back obscured unless secrets are asked for.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from prefect.blocks.abstract import CredentialsBlock
from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from pydantic import Field, SecretStr, field_validator, model_validator

from prefect_beluga import llms
from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings import Embedder, HashingEmbedder, OpenAIEmbedder
from prefect_beluga.llms._client import DEFAULT_BASE_URL
from prefect_beluga.llms.config import http_url
from prefect_beluga.vectorstores import InMemoryVectorStore, PineconeVectorStore, VectorStore

#: Names of the block documents `save_default_blocks` creates and the flows load by default.
DEFAULT_CHAT_MODEL_BLOCK = "beluga-chat"
DEFAULT_EMBEDDER_BLOCK = "beluga-embedder"
DEFAULT_STORE_BLOCK = "beluga-store"
DEFAULT_OPENAI_CREDENTIALS_BLOCK = "beluga-openai"
DEFAULT_PINECONE_CREDENTIALS_BLOCK = "beluga-pinecone"

_OPENAI_LOGO = (
    "https://images.ctfassets.net/gm98wzqotmnx/QE8JwcbZBmIfiognXDLcY/"
    "2bcd4c759f877d37159f576101218b49/open-ai-logo-8B9BFEDC26-seeklogo.com.png?h=250"
)

B = TypeVar("B", bound=Block)


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
        description="Provider registered with prefect_beluga.llms.Factory: 'openai', 'offline', or your own.",
    )
    model_name: str = Field(default="gpt-4o-mini", min_length=1, description="Model name, e.g. gpt-4o-mini.")
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
    credentials: OpenAICredentials | None = Field(
        default=None, description="Key and base URL for the provider; empty reads OPENAI_API_KEY where the flow runs."
    )

    def get_chat_model(self) -> llms.ChatModel:
        """The chat model, built with `llms.Factory().create_provider(provider, llms.Config(...))`.

        Raises:
            ValidationError: unknown provider (the message lists the known ones), or the provider
                rejects the configuration (e.g. "openai" without any key).
        """
        options = dict(self.options)
        api_key = base_url = None
        if self.credentials is not None:
            api_key, base_url = self.credentials.api_key, self.credentials.base_url
            if self.credentials.organization:  # sent as the header the SDK would send
                options["extra_headers"] = {**options.get("extra_headers", {}), "OpenAI-Organization": self.credentials.organization}
        config = llms.Config(
            provider=self.provider,
            model_name=self.model_name,
            api_key=api_key,
            base_url=base_url,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            timeout=self.timeout,
            options=options,
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

    provider: Literal["hashing", "openai"] = Field(
        default="hashing", description="'openai' for OpenAI's embeddings API, 'hashing' for the offline embedder."
    )
    model_name: str = Field(
        default="text-embedding-3-small", min_length=1, description="OpenAI embedding model, e.g. text-embedding-3-small."
    )
    dimension: int | None = Field(
        default=None,
        ge=1,
        description="Vector length; empty for the model's own (hashing: 384). text-embedding-3 models shorten to it.",
    )
    batch_size: int = Field(default=512, ge=1, le=2048, description="Most texts per embeddings request.")
    max_concurrency: int = Field(default=4, ge=1, description="Most embeddings requests in flight at once.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds one request may take.")
    credentials: OpenAICredentials | None = Field(
        default=None, description="OpenAI key and base URL; empty reads OPENAI_API_KEY where the flow runs."
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
        if credentials is not None and credentials.organization:
            raise ValidationError(
                "EmbedderBlock: OpenAIEmbedder cannot send an organization; clear `organization` on the "
                "credentials block (requests then use the key's default organization)"
            )
        return OpenAIEmbedder(
            self.model_name,
            api_key=credentials.api_key if credentials else None,
            base_url=credentials.base_url if credentials else None,
            dimension=self.dimension,
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            timeout=self.timeout,
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
        default=..., min_length=1, description="File the store is read from and saved to (.npz), on the machine that runs the flow."
    )
    dimension: int | None = Field(
        default=None,
        ge=1,
        description="Vector length of the embedder used with this store; a file of another length is refused. Empty: any.",
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
    namespace: str = Field(default="", max_length=512, description="Namespace to read and write; empty for the default one.")
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


def _concrete_subclasses(base: type[B]) -> list[type[B]]:
    """`base`'s subclasses that can be saved (not interfaces), in definition order."""
    found: list[type[B]] = []
    for cls in base.__subclasses__():
        if ABC not in cls.__bases__:
            found.append(cls)
        found.extend(c for c in _concrete_subclasses(cls) if c not in found)
    return found


async def _vector_store_types_named(name: str, client: PrefectClient) -> list[type[VectorStoreBlock]]:
    """The vector store block types that have a document called `name`."""
    found = []
    for cls in _concrete_subclasses(VectorStoreBlock):
        try:
            await client.read_block_document_by_name(name, cls.get_block_type_slug(), include_secrets=False)
        except ObjectNotFound:
            continue
        found.append(cls)
    return found


async def _find_vector_store_block(name: str, client: PrefectClient) -> VectorStoreBlock | None:
    types = await _vector_store_types_named(name, client)
    if len(types) > 1:
        raise ValidationError(
            f"{name!r} names a vector store block of each of the types "
            f"{', '.join(c.get_block_type_slug() for c in types)}; delete one, or load it by type: "
            f"Block.load('{types[0].get_block_type_slug()}/{name}')"
        )
    return await types[0].aload(name, client=client) if types else None


async def load_block(block_type: type[B], name: str) -> B:
    """The `block_type` document called `name`; a `ValidationError` saying how to create it if none.

        >>> llm = (await load_block(ChatModelBlock, "beluga-chat")).get_chat_model()
    """
    try:
        return await block_type.aload(name)
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        raise ValidationError(
            f"no {block_type.get_block_type_slug()} block named {name!r}; create one in the Prefect UI "
            "or with `python blocks/create_blocks.py`"
        ) from None


async def load_vector_store_block(name: str, *, client: PrefectClient | None = None) -> VectorStoreBlock:
    """The vector store block called `name`, whichever type it is (embedded, Pinecone, ...).

    `Block.load` needs the type (`PineconeVectorStoreBlock.load(name)`, or
    `Block.load("beluga-pinecone-vector-store/NAME")`); a flow that should work with whatever
    store the deployment configured uses this instead:

        >>> store_block = await load_vector_store_block("beluga-store")
        >>> store = store_block.get_store()
        >>> store.add_documents(chunks, embedder)
        >>> store_block.persist(store)

    Args:
        name: The block document's name.
        client: A Prefect client to use (default: a new one).

    Raises:
        ValidationError: no vector store block has that name, or blocks of two types do.
    """
    if client is None:
        async with get_client() as client:
            return await load_vector_store_block(name, client=client)
    block = await _find_vector_store_block(name, client)
    if block is None:
        known = ", ".join(c.get_block_type_slug() for c in _concrete_subclasses(VectorStoreBlock))
        raise ValidationError(
            f"no vector store block named {name!r} (looked among {known}); create one in the Prefect UI "
            "or with `python blocks/create_blocks.py`"
        )
    return block


# -- default documents from the environment ---------------------------------------------------------


def save_default_blocks(env: Mapping[str, str] = os.environ, *, overwrite: bool = True) -> dict[str, str]:
    """Save the block documents a deployment needs, configured from environment variables.

    Idempotent: the documents keep their names (see the module docstring for the variables and
    names), so running it again updates them in place instead of adding copies; with
    `overwrite=False` documents that already exist are kept as they are. The embedder and the
    store are kept consistent: the embedder's vectors have the Pinecone index's dimension (asked
    from the index), and the embedded store's default file is named after the embedder. Nothing
    is saved unless the whole configuration is valid.

    Args:
        env: The variables to read (default: this process's environment).
        overwrite: Replace documents that already exist (False: keep them).

    Returns:
        One line per document, keyed by document name: what was saved or kept, and which missing
        variable made it the offline default, e.g. "OPENAI_API_KEY is not set: saved the offline
        chat model as 'beluga-chat'".

    Raises:
        ValidationError: a variable is malformed (e.g. BELUGA_EMBEDDING_DIMENSION), PINECONE_API_KEY
            is set without PINECONE_INDEX or PINECONE_HOST, or the embedder and store disagree.

    Examples:
        >>> for line in save_default_blocks().values():
        ...     print(line)
        >>> save_default_blocks({"OPENAI_API_KEY": key, "BELUGA_CHAT_MODEL": "gpt-4o"}, overwrite=False)
    """
    return run_sync(asave_default_blocks(env, overwrite=overwrite))


async def asave_default_blocks(env: Mapping[str, str] = os.environ, *, overwrite: bool = True) -> dict[str, str]:
    """`save_default_blocks`, for async code."""
    async with get_client() as client:
        return await _save_default_blocks(env, overwrite, client)


async def _save_default_blocks(env: Mapping[str, str], overwrite: bool, client: PrefectClient) -> dict[str, str]:
    env = {key: value.strip() for key, value in env.items() if isinstance(value, str) and value.strip()}
    dimension = _dimension_from(env)
    report: dict[str, str] = {}
    saves: list[tuple[Block, str, str]] = []  # (block, name, message), saved in this order

    async def existing(cls: type[B], name: str) -> B | None:
        if overwrite:
            return None
        try:
            return await cls.aload(name, client=client)
        except ValueError as exc:
            if isinstance(exc.__cause__, ObjectNotFound):
                return None
            raise

    def kept(block: Block, name: str) -> None:
        report[name] = f"kept the existing {block.get_block_type_slug()} block '{name}' (overwrite=False)"

    # Credentials.
    openai_credentials: OpenAICredentials | None = None
    if "OPENAI_API_KEY" in env:
        openai_credentials = await existing(OpenAICredentials, DEFAULT_OPENAI_CREDENTIALS_BLOCK)
        if openai_credentials is not None:
            kept(openai_credentials, DEFAULT_OPENAI_CREDENTIALS_BLOCK)
        else:
            openai_credentials = OpenAICredentials(api_key=SecretStr(env["OPENAI_API_KEY"]), base_url=env.get("OPENAI_BASE_URL"))
            where = f" for {openai_credentials.base_url}" if openai_credentials.base_url else ""
            saves.append((openai_credentials, DEFAULT_OPENAI_CREDENTIALS_BLOCK, f"saved the OpenAI credentials{where}"))
    pinecone_credentials: PineconeCredentials | None = None
    if "PINECONE_API_KEY" in env:
        if "PINECONE_INDEX" not in env and "PINECONE_HOST" not in env:
            raise ValidationError(
                "PINECONE_API_KEY is set but neither PINECONE_INDEX (the index name) nor PINECONE_HOST (its "
                "data-plane host) is: set one of them, or unset PINECONE_API_KEY to use the embedded store"
            )
        pinecone_credentials = await existing(PineconeCredentials, DEFAULT_PINECONE_CREDENTIALS_BLOCK)
        if pinecone_credentials is not None:
            kept(pinecone_credentials, DEFAULT_PINECONE_CREDENTIALS_BLOCK)
        else:
            pinecone_credentials = PineconeCredentials(api_key=SecretStr(env["PINECONE_API_KEY"]))
            saves.append((pinecone_credentials, DEFAULT_PINECONE_CREDENTIALS_BLOCK, "saved the Pinecone credentials"))

    # Chat model.
    chat = await existing(ChatModelBlock, DEFAULT_CHAT_MODEL_BLOCK)
    if chat is not None:
        kept(chat, DEFAULT_CHAT_MODEL_BLOCK)
    else:
        if openai_credentials is not None:
            model_name = env.get("BELUGA_CHAT_MODEL", "gpt-4o-mini")
            chat = ChatModelBlock(provider="openai", model_name=model_name, credentials=openai_credentials)
            message = f"saved the OpenAI chat model '{model_name}'"
        else:
            chat = ChatModelBlock(provider="offline")
            message = "OPENAI_API_KEY is not set: saved the offline chat model"
        chat.get_chat_model()  # checks the configuration (no network)
        saves.append((chat, DEFAULT_CHAT_MODEL_BLOCK, message))

    # The store decides the dimension when it is a Pinecone index; the embedder decides it otherwise.
    store = None if overwrite else await _find_vector_store_block(DEFAULT_STORE_BLOCK, client)
    store_kept = store is not None
    if store_kept:
        kept(store, DEFAULT_STORE_BLOCK)
    elif pinecone_credentials is not None:
        store = PineconeVectorStoreBlock(
            index_name=env.get("PINECONE_INDEX"),
            host=env.get("PINECONE_HOST"),
            namespace=env.get("PINECONE_NAMESPACE", ""),
            credentials=pinecone_credentials,
        )
    index_dimension = await _index_dimension(store) if isinstance(store, PineconeVectorStoreBlock) else None

    embedder_block = await existing(EmbedderBlock, DEFAULT_EMBEDDER_BLOCK)
    if embedder_block is not None:
        kept(embedder_block, DEFAULT_EMBEDDER_BLOCK)
        embedder = embedder_block.get_embedder()
    else:
        if dimension is None:
            dimension = index_dimension
        if openai_credentials is not None:
            model_name = env.get("BELUGA_EMBEDDING_MODEL", "text-embedding-3-small")
            embedder_block = EmbedderBlock(provider="openai", model_name=model_name, dimension=dimension, credentials=openai_credentials)
            message = f"saved the OpenAI embedder '{model_name}'"
        else:
            embedder_block = EmbedderBlock(provider="hashing", dimension=dimension)
            message = "OPENAI_API_KEY is not set: saved the offline hashing embedder"
        embedder = embedder_block.get_embedder()  # checks the configuration (no network)
        saves.append((embedder_block, DEFAULT_EMBEDDER_BLOCK, f"{message} (dimension {embedder.dimension})"))

    if index_dimension is not None and index_dimension != embedder.dimension:
        raise ValidationError(
            f"the Pinecone index holds vectors of dimension {index_dimension} but the embedder "
            f"'{DEFAULT_EMBEDDER_BLOCK}' makes {embedder.dimension}; set BELUGA_EMBEDDING_DIMENSION={index_dimension} "
            "(text-embedding-3 models and the hashing embedder take any size) or use an index of that dimension"
        )
    if isinstance(store, EmbeddedVectorStoreBlock) and store.dimension not in (None, embedder.dimension):
        raise ValidationError(
            f"the kept store block '{DEFAULT_STORE_BLOCK}' expects dimension {store.dimension} but the embedder "
            f"'{DEFAULT_EMBEDDER_BLOCK}' makes {embedder.dimension}; save with overwrite=True to replace both"
        )
    if store is None:
        path = Path(env.get("BELUGA_STORE_PATH") or _default_store_path(env, embedder_block, embedder))
        store = EmbeddedVectorStoreBlock(path=str(path.expanduser().resolve()), dimension=embedder.dimension)
        store.get_store()  # an existing file must hold vectors of the embedder's dimension
        saves.append((store, DEFAULT_STORE_BLOCK, f"PINECONE_API_KEY is not set: saved the embedded store at {store.path}"))
    elif not store_kept:
        where = f"index '{store.index_name}'" if store.index_name else f"host {store.host}"
        saves.append((store, DEFAULT_STORE_BLOCK, f"saved the Pinecone store ({where}, namespace '{store.namespace}')"))

    for block, name, message in saves:
        await block.asave(name, overwrite=True, client=client)
        report[name] = f"{message} as '{name}'"
        if isinstance(block, VectorStoreBlock):
            for replaced in await _remove_other_vector_stores(name, type(block), client):
                report[name] += f" (replacing the {replaced} block of that name)"
    return report


def _dimension_from(env: Mapping[str, str]) -> int | None:
    value = env.get("BELUGA_EMBEDDING_DIMENSION")
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValidationError(f"BELUGA_EMBEDDING_DIMENSION must be a whole number >= 1, got {value!r}")
    return int(value)


def _default_store_path(env: Mapping[str, str], block: EmbedderBlock, embedder: Embedder) -> Path:
    """PREFECT_HOME/beluga/store-<embedder>.npz: a new embedder gets a new file, never a mixed one."""
    from prefect.settings import PREFECT_HOME

    home = Path(env.get("PREFECT_HOME") or PREFECT_HOME.value())
    model = "hashing" if block.provider == "hashing" else f"openai-{block.model_name}"
    return home / "beluga" / re.sub(r"[^A-Za-z0-9._-]+", "-", f"store-{model}-{embedder.dimension}.npz")


async def _index_dimension(block: PineconeVectorStoreBlock) -> int | None:
    """The Pinecone index's dimension (one describe_index_stats request)."""
    store = block.get_store()
    try:
        return await store.adimension()
    finally:
        store.close()


async def _remove_other_vector_stores(name: str, keep: type[VectorStoreBlock], client: PrefectClient) -> list[str]:
    """Delete the vector store documents called `name` of types other than `keep`; their slugs."""
    removed = []
    for cls in await _vector_store_types_named(name, client):
        if cls is not keep:
            await cls.adelete(name, client=client)
            removed.append(cls.get_block_type_slug())
    return removed


__all__ = [
    "DEFAULT_CHAT_MODEL_BLOCK",
    "DEFAULT_EMBEDDER_BLOCK",
    "DEFAULT_OPENAI_CREDENTIALS_BLOCK",
    "DEFAULT_PINECONE_CREDENTIALS_BLOCK",
    "DEFAULT_STORE_BLOCK",
    "ChatModelBlock",
    "EmbeddedVectorStoreBlock",
    "EmbedderBlock",
    "OpenAICredentials",
    "PineconeCredentials",
    "PineconeVectorStoreBlock",
    "VectorStoreBlock",
    "asave_default_blocks",
    "load_block",
    "load_vector_store_block",
    "save_default_blocks",
]
