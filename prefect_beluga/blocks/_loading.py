"""Loading blocks by name, with one error that says how to create a missing one."""

from __future__ import annotations

from abc import ABC
from typing import Any, NamedTuple, TypeVar

from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound

from prefect_beluga.blocks._defaults import DEFAULT_CHAT_MODEL_BLOCK, DEFAULT_EMBEDDER_BLOCK, DEFAULT_STORE_BLOCK
from prefect_beluga.blocks._models import ChatModelBlock, EmbedderBlock
from prefect_beluga.blocks._stores import VectorStoreBlock
from prefect_beluga.core.errors import ValidationError

__all__ = ["RagComponents", "is_block_not_found", "load_block", "load_rag_components", "load_vector_store_block"]

B = TypeVar("B", bound=Block)


def is_block_not_found(exc: BaseException) -> bool:
    """Whether `exc` is `Block.load`'s "no document of that name" error (a ValueError from ObjectNotFound)."""
    return isinstance(exc, ValueError) and isinstance(exc.__cause__, ObjectNotFound)


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

    Examples:
        Load the default chat model in a flow:
        ```python
        from prefect_beluga.blocks import ChatModelBlock, load_block

        await ChatModelBlock(provider="offline").asave("example-chat", overwrite=True)  # once
        llm = (await load_block(ChatModelBlock, "example-chat")).get_chat_model()
        ```
    """
    try:
        return await block_type.aload(name)
    except ValueError as exc:
        if not is_block_not_found(exc):
            raise
        raise ValidationError(
            f"no {block_type.get_block_type_slug()} block named {name!r}; create one in the Prefect UI "
            "or with `python blocks/create_blocks.py`"
        ) from None


async def load_vector_store_block(name: str, *, client: PrefectClient | None = None) -> VectorStoreBlock:
    """The vector store block called `name`, whichever type it is (embedded, Pinecone, ...).

    `Block.load` needs the type (`PineconeVectorStoreBlock.load(name)`, or
    `Block.load("beluga-pinecone-vector-store/NAME")`); a flow that should work with whatever
    store the deployment configured uses this instead.

    Args:
        name: The block document's name.
        client: A Prefect client to use (default: a new one).

    Raises:
        ValidationError: no vector store block has that name, or blocks of two types do.

    Examples:
        Add documents to whatever store the deployment configured:
        ```python
        from prefect_beluga.blocks import EmbeddedVectorStoreBlock, load_vector_store_block
        from prefect_beluga.embeddings import HashingEmbedder
        from prefect_beluga.schema import Document

        await EmbeddedVectorStoreBlock(path="store.npz").asave("example-store", overwrite=True)  # once
        store_block = await load_vector_store_block("example-store")
        store = store_block.get_store()
        store.add_documents([Document(page_content="Prefect runs flows.")], HashingEmbedder(64))
        store_block.persist(store)
        ```
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


class RagComponents(NamedTuple):
    """The chat model, embedder and vector store a RAG flow works with."""

    llm: Any
    embedder: Any
    store: Any


async def load_rag_components(
    chat_model_block: str = DEFAULT_CHAT_MODEL_BLOCK,
    embedder_block: str = DEFAULT_EMBEDDER_BLOCK,
    vector_store_block: str = DEFAULT_STORE_BLOCK,
) -> RagComponents:
    """The ready chat model, embedder and store of three saved blocks, by name.

    Examples:
        ```python
        from prefect_beluga.blocks import ChatModelBlock, EmbeddedVectorStoreBlock, EmbedderBlock, load_rag_components

        await ChatModelBlock(provider="offline").asave("example-chat", overwrite=True)  # once each, e.g. by
        await EmbedderBlock(provider="hashing").asave("example-embedder", overwrite=True)  # save_default_blocks()
        await EmbeddedVectorStoreBlock(path="store.npz").asave("example-store", overwrite=True)
        llm, embedder, store = await load_rag_components("example-chat", "example-embedder", "example-store")
        ```
    """
    llm = (await load_block(ChatModelBlock, chat_model_block)).get_chat_model()
    embedder = (await load_block(EmbedderBlock, embedder_block)).get_embedder()
    store = (await load_vector_store_block(vector_store_block)).get_store()
    return RagComponents(llm, embedder, store)
