"""Provisioning: the block documents a deployment needs, saved from environment variables.

The variables and the document names are listed in `prefect_beluga.blocks`' docstring.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient, get_client
from prefect.settings import PREFECT_HOME
from pydantic import SecretStr

from prefect_beluga._openai_client import AZURE_OPENAI_API_VERSION_ENVS
from prefect_beluga._openai_servers import server_preset
from prefect_beluga.blocks._credentials import AzureOpenAICredentials, OpenAICredentials, PineconeCredentials
from prefect_beluga.blocks._loading import _find_vector_store_block, _vector_store_types_named, is_block_not_found
from prefect_beluga.blocks._models import ChatModelBlock, EmbedderBlock
from prefect_beluga.blocks._stores import EmbeddedVectorStoreBlock, PineconeVectorStoreBlock, VectorStoreBlock
from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.embeddings import Embedder

__all__ = ["asave_default_blocks", "block_names", "save_default_blocks"]

B = TypeVar("B", bound=Block)

#: The rate limit BELUGA_OPENAI_RATE_PER_SECOND creates and the OpenAI blocks saved with it take.
OPENAI_RATE_LIMIT = "openai"
#: The names of the documents `save_default_blocks` saves start with it: "beluga-chat", ...
DEFAULT_PREFIX = "beluga"


def save_default_blocks(
    env: Mapping[str, str] = os.environ, *, overwrite: bool = True, prefix: str = DEFAULT_PREFIX
) -> dict[str, str]:
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
        prefix: The documents' names start with it (`<prefix>-chat`, `<prefix>-store`, ...). Any
            other prefix than "beluga" is a namespace of its own that shares nothing with the
            default documents: its embedded store file is `<prefix>-store-<embedder>.npz` (beside
            BELUGA_STORE_PATH when set), its Pinecone namespace is `<prefix>` (after
            PINECONE_NAMESPACE when set: `<namespace>-<prefix>`). The quickstart uses "quickstart".

    Returns:
        One line per document, keyed by document name: what was saved or kept, and which missing
        variable made it the offline default, e.g. "OPENAI_API_KEY is not set: saved the offline
        chat model as 'beluga-chat'".

    Raises:
        ValidationError: a variable is malformed (e.g. BELUGA_EMBEDDING_DIMENSION), PINECONE_API_KEY
            is set without PINECONE_INDEX or PINECONE_HOST, or the embedder and store disagree.

    Examples:
        Save the defaults from this process's environment, keeping documents that exist:
        ```python
        from prefect_beluga.blocks import save_default_blocks

        for line in save_default_blocks(overwrite=False).values():
            print(line)
        ```
    """
    return run_sync(asave_default_blocks(env, overwrite=overwrite, prefix=prefix))


async def asave_default_blocks(
    env: Mapping[str, str] = os.environ, *, overwrite: bool = True, prefix: str = DEFAULT_PREFIX
) -> dict[str, str]:
    """`save_default_blocks`, for async code."""
    names = block_names(prefix)
    async with get_client() as client:
        return await _save_default_blocks(env, overwrite, client, names, prefix)


def block_names(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """The document names `save_default_blocks(prefix=...)` saves, by kind: "chat", "embedder",
    "store", "openai", "pinecone", "azure-openai" (e.g. `block_names("quickstart")["store"]` is
    "quickstart-store"; the "beluga" prefix gives the DEFAULT_*_BLOCK names)."""
    if not isinstance(prefix, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", prefix):
        raise ValidationError(f"prefix must be lower-case letters, digits and dashes, got {prefix!r}")
    return {kind: f"{prefix}-{kind}" for kind in ("chat", "embedder", "store", "openai", "pinecone", "azure-openai")}


async def _save_default_blocks(
    env: Mapping[str, str], overwrite: bool, client: PrefectClient, names: dict[str, str], prefix: str
) -> dict[str, str]:
    own = prefix != DEFAULT_PREFIX  # a namespace of its own: its own store file / Pinecone namespace
    env = {key: value.strip() for key, value in env.items() if isinstance(value, str) and value.strip()}
    dimension = _dimension_from(env)
    rate = _rate_from(env)
    azure = "AZURE_OPENAI_ENDPOINT" in env and "AZURE_OPENAI_API_KEY" in env
    if "AZURE_OPENAI_ENDPOINT" in env and not azure:
        raise ValidationError(
            "AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_API_KEY is not: set the key (a Microsoft Entra token "
            "provider cannot be saved in a block), or unset AZURE_OPENAI_ENDPOINT"
        )
    server = env.get("BELUGA_OPENAI_SERVER")
    if server is not None:
        server = server_preset(server, where="BELUGA_OPENAI_SERVER").name
    rate_limit = OPENAI_RATE_LIMIT if rate is not None and ("OPENAI_API_KEY" in env or azure) else None
    report: dict[str, str] = {}
    saves: list[tuple[Block, str, str]] = []  # (block, name, message), saved in this order

    async def existing(cls: type[B], name: str) -> B | None:
        if overwrite:
            return None
        try:
            return await cls.aload(name, client=client)
        except ValueError as exc:
            if is_block_not_found(exc):
                return None
            raise

    def kept(block: Block, name: str) -> None:
        report[name] = f"kept the existing {block.get_block_type_slug()} block '{name}' (overwrite=False)"

    # Credentials.
    openai_credentials: OpenAICredentials | AzureOpenAICredentials | None = None
    if azure:
        openai_credentials = await existing(AzureOpenAICredentials, names["azure-openai"])
        if openai_credentials is not None:
            kept(openai_credentials, names["azure-openai"])
        else:
            version = next((env[v] for v in AZURE_OPENAI_API_VERSION_ENVS if v in env), "2024-10-21")
            openai_credentials = AzureOpenAICredentials(
                azure_endpoint=env["AZURE_OPENAI_ENDPOINT"], api_version=version,
                api_key=SecretStr(env["AZURE_OPENAI_API_KEY"]),
            )
            saves.append((openai_credentials, names["azure-openai"],
                          f"saved the Azure OpenAI credentials for {openai_credentials.azure_endpoint} "
                          f"(api-version {version})"))
    elif "OPENAI_API_KEY" in env:
        openai_credentials = await existing(OpenAICredentials, names["openai"])
        if openai_credentials is not None:
            kept(openai_credentials, names["openai"])
        else:
            openai_credentials = OpenAICredentials(
                api_key=SecretStr(env["OPENAI_API_KEY"]), base_url=env.get("OPENAI_BASE_URL")
            )
            where = f" for {openai_credentials.base_url}" if openai_credentials.base_url else ""
            saves.append((openai_credentials, names["openai"], f"saved the OpenAI credentials{where}"))
    pinecone_credentials: PineconeCredentials | None = None
    if "PINECONE_API_KEY" in env:
        if "PINECONE_INDEX" not in env and "PINECONE_HOST" not in env:
            raise ValidationError(
                "PINECONE_API_KEY is set but neither PINECONE_INDEX (the index name) nor PINECONE_HOST (its "
                "data-plane host) is: set one of them, or unset PINECONE_API_KEY to use the embedded store"
            )
        pinecone_credentials = await existing(PineconeCredentials, names["pinecone"])
        if pinecone_credentials is not None:
            kept(pinecone_credentials, names["pinecone"])
        else:
            pinecone_credentials = PineconeCredentials(api_key=SecretStr(env["PINECONE_API_KEY"]))
            saves.append((pinecone_credentials, names["pinecone"], "saved the Pinecone credentials"))

    # Chat model.
    chat = await existing(ChatModelBlock, names["chat"])
    if chat is not None:
        kept(chat, names["chat"])
    else:
        if isinstance(openai_credentials, AzureOpenAICredentials):
            model_name = env.get("AZURE_OPENAI_CHAT_DEPLOYMENT") or env.get("BELUGA_CHAT_MODEL", "gpt-4o-mini")
            chat = ChatModelBlock(
                provider="azure_openai", model_name=model_name, credentials=openai_credentials, rate_limit=rate_limit
            )
            message = f"saved the Azure OpenAI chat model (deployment '{model_name}')"
        elif openai_credentials is not None:
            model_name = env.get("BELUGA_CHAT_MODEL", "gpt-4o-mini")
            chat = ChatModelBlock(
                provider="openai", model_name=model_name, credentials=openai_credentials, rate_limit=rate_limit,
                server=server,
            )
            at = f" on the {server} server preset" if server else ""
            message = f"saved the OpenAI chat model '{model_name}'{at}"
        else:
            chat = ChatModelBlock(provider="offline")
            message = "OPENAI_API_KEY is not set: saved the offline chat model"
        chat.get_chat_model()  # checks the configuration (no network)
        saves.append((chat, names["chat"], message))

    # The store decides the dimension when it is a Pinecone index; the embedder decides it otherwise.
    store = None if overwrite else await _find_vector_store_block(names["store"], client)
    store_kept = store is not None
    if store_kept:
        kept(store, names["store"])
    elif pinecone_credentials is not None:
        store = PineconeVectorStoreBlock(
            index_name=env.get("PINECONE_INDEX"),
            host=env.get("PINECONE_HOST"),
            namespace="-".join(filter(None, (env.get("PINECONE_NAMESPACE", ""), prefix if own else ""))),
            credentials=pinecone_credentials,
        )
    index_dimension = await _index_dimension(store) if isinstance(store, PineconeVectorStoreBlock) else None

    embedder_block = await existing(EmbedderBlock, names["embedder"])
    if embedder_block is not None:
        kept(embedder_block, names["embedder"])
        embedder = embedder_block.get_embedder()
    else:
        if dimension is None:
            dimension = index_dimension
        no_embeddings = server is not None and not server_preset(server).capabilities.embeddings
        if isinstance(openai_credentials, AzureOpenAICredentials):
            model_name = env.get("AZURE_OPENAI_EMBEDDING_DEPLOYMENT") or env.get(
                "BELUGA_EMBEDDING_MODEL", "text-embedding-3-small")
            embedder_block = EmbedderBlock(
                provider="azure_openai", model_name=model_name, dimension=dimension, credentials=openai_credentials,
                rate_limit=rate_limit,
            )
            message = f"saved the Azure OpenAI embedder (deployment '{model_name}')"
        elif openai_credentials is not None and no_embeddings:
            embedder_block = EmbedderBlock(provider="hashing", dimension=dimension)
            message = f"the {server} server preset has no embeddings endpoint: saved the offline hashing embedder"
        elif openai_credentials is not None:
            model_name = env.get("BELUGA_EMBEDDING_MODEL", "text-embedding-3-small")
            embedder_block = EmbedderBlock(
                provider="openai", model_name=model_name, dimension=dimension, credentials=openai_credentials,
                rate_limit=rate_limit, server=server,
            )
            message = f"saved the OpenAI embedder '{model_name}'"
        else:
            embedder_block = EmbedderBlock(provider="hashing", dimension=dimension)
            message = "OPENAI_API_KEY is not set: saved the offline hashing embedder"
        embedder = embedder_block.get_embedder()  # checks the configuration (no network)
        saves.append((embedder_block, names["embedder"], f"{message} (dimension {embedder.dimension})"))

    if index_dimension is not None and index_dimension != embedder.dimension:
        raise ValidationError(
            f"the Pinecone index holds vectors of dimension {index_dimension} but the embedder "
            f"'{names['embedder']}' makes {embedder.dimension}; set BELUGA_EMBEDDING_DIMENSION={index_dimension} "
            "(text-embedding-3 models and the hashing embedder take any size) or use an index of that dimension"
        )
    if isinstance(store, EmbeddedVectorStoreBlock) and store.dimension not in (None, embedder.dimension):
        raise ValidationError(
            f"the kept store block '{names['store']}' expects dimension {store.dimension} but the embedder "
            f"'{names['embedder']}' makes {embedder.dimension}; save with overwrite=True to replace both"
        )
    if store is None:
        path = Path(env.get("BELUGA_STORE_PATH") or _default_store_path(env, embedder_block, embedder))
        if own:
            path = path.with_name(f"{prefix}-{path.name}")
        store = EmbeddedVectorStoreBlock(path=str(path.expanduser().resolve()), dimension=embedder.dimension)
        store.get_store()  # an existing file must hold vectors of the embedder's dimension
        message = f"PINECONE_API_KEY is not set: saved the embedded store at {store.path}"
        saves.append((store, names["store"], message))
    elif not store_kept:
        where = f"index '{store.index_name}'" if store.index_name else f"host {store.host}"
        saves.append((store, names["store"], f"saved the Pinecone store ({where}, namespace '{store.namespace}')"))

    if rate_limit is not None:
        from prefect_beluga.orchestration._limits import aensure_rate_limit

        await aensure_rate_limit(rate_limit, per_second=rate)
        report[f"rate limit {rate_limit}"] = (
            f"saved the rate limit '{rate_limit}' ({rate:g} requests per second, BELUGA_OPENAI_RATE_PER_SECOND) "
            "taken by the OpenAI chat model and embedder blocks saved here"
        )
    for block, name, message in saves:
        await block.asave(name, overwrite=True, client=client)
        report[name] = f"{message} as '{name}'"
        if isinstance(block, VectorStoreBlock):
            for replaced in await _remove_other_vector_stores(name, type(block), client):
                report[name] += f" (replacing the {replaced} block of that name)"
    return report


def _rate_from(env: Mapping[str, str]) -> float | None:
    value = env.get("BELUGA_OPENAI_RATE_PER_SECOND")
    if value is None:
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not rate > 0 or rate != rate or rate == float("inf"):
        raise ValidationError(
            f"BELUGA_OPENAI_RATE_PER_SECOND must be a number of requests per second > 0, got {value!r}"
        )
    return rate


def _dimension_from(env: Mapping[str, str]) -> int | None:
    value = env.get("BELUGA_EMBEDDING_DIMENSION")
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValidationError(f"BELUGA_EMBEDDING_DIMENSION must be a whole number >= 1, got {value!r}")
    return int(value)


def _default_store_path(env: Mapping[str, str], block: EmbedderBlock, embedder: Embedder) -> Path:
    """PREFECT_HOME/beluga/store-<embedder>.npz: a new embedder gets a new file, never a mixed one."""
    home = Path(env.get("PREFECT_HOME") or PREFECT_HOME.value())
    model = "hashing" if block.provider == "hashing" else f"{block.provider}-{block.model_name}"
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
