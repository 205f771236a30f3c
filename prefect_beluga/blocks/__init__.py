"""Prefect blocks: credentials, chat model, embedder and vector stores as saved configuration.

A deployment keeps its configuration in the Prefect API, not in code: save the blocks once (the
UI's Blocks page, `python blocks/create_blocks.py`, or `save_default_blocks()`), and every flow
run, on any worker, loads them by name and gets working components back:

```python
from prefect import flow

from prefect_beluga import rag
from prefect_beluga.blocks import ChatModelBlock, EmbedderBlock, load_vector_store_block


@flow
async def answer(question: str) -> str:
    llm = (await ChatModelBlock.aload("beluga-chat")).get_chat_model()
    embedder = (await EmbedderBlock.aload("beluga-embedder")).get_embedder()
    store = (await load_vector_store_block("beluga-store")).get_store()
    return (await rag.build_rag_chain(store, embedder, llm).ainvoke(question))["output"]
```

Saving them by hand, with the key in a credentials block that the others reference:

```python
from pydantic import SecretStr

from prefect_beluga.blocks import ChatModelBlock, OpenAICredentials

credentials = OpenAICredentials(api_key=SecretStr("sk-..."))
credentials.save("beluga-openai")
ChatModelBlock(provider="openai", model_name="gpt-4o-mini", credentials=credentials).save("beluga-chat")
```

Block types (register them for the UI with `prefect block register -m prefect_beluga.blocks`):

    slug                           class                       builds
    beluga-openai-credentials      OpenAICredentials           openai.OpenAI (get_client)
    beluga-azure-openai-credentials AzureOpenAICredentials     openai.AzureOpenAI (get_client)
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
    BELUGA_OPENAI_SERVER        its server preset (ollama, vllm, groq, gemini, anthropic, compatible)
    AZURE_OPENAI_ENDPOINT       with AZURE_OPENAI_API_KEY: Azure OpenAI instead of OpenAI, saved as
                                the "beluga-azure-openai" credentials; the chat model's deployment is
                                AZURE_OPENAI_CHAT_DEPLOYMENT (else BELUGA_CHAT_MODEL), the embedder's
                                AZURE_OPENAI_EMBEDDING_DEPLOYMENT (else BELUGA_EMBEDDING_MODEL)
    OPENAI_API_VERSION          Azure OpenAI API version (also AZURE_OPENAI_API_VERSION; default 2024-10-21)
    BELUGA_CHAT_MODEL           chat model name (default "gpt-4o-mini")
    BELUGA_EMBEDDING_MODEL      OpenAI embedding model (default "text-embedding-3-small")
    BELUGA_EMBEDDING_DIMENSION  vector length (default: the Pinecone index's, else the embedder's own)
    BELUGA_OPENAI_RATE_PER_SECOND  with OPENAI_API_KEY: a Prefect rate limit "openai" of this many
                                requests per second, taken by the OpenAI blocks saved
                                (prefect_beluga.limits)
    PINECONE_API_KEY            a Pinecone store, on PINECONE_INDEX (name) or PINECONE_HOST (host),
                                in PINECONE_NAMESPACE; unset: the embedded store
    BELUGA_STORE_PATH           file of the embedded store (default: under PREFECT_HOME/beluga/,
                                one file per embedder, so vectors of two embedders never mix)

Keys live in `SecretStr` fields: reprs, logs and `model_dump_json()` show `'**********'`, the API
stores them encrypted and reads them back obscured unless secrets are asked for.
"""

from prefect_beluga.blocks._credentials import AzureOpenAICredentials, OpenAICredentials, PineconeCredentials
from prefect_beluga.blocks._defaults import (
    DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK,
    DEFAULT_CHAT_MODEL_BLOCK,
    DEFAULT_EMBEDDER_BLOCK,
    DEFAULT_OPENAI_CREDENTIALS_BLOCK,
    DEFAULT_PINECONE_CREDENTIALS_BLOCK,
    DEFAULT_STORE_BLOCK,
)
from prefect_beluga.blocks._loading import RagComponents, load_block, load_rag_components, load_vector_store_block
from prefect_beluga.blocks._models import ChatModelBlock, EmbedderBlock
from prefect_beluga.blocks._provisioning import asave_default_blocks, block_names, save_default_blocks
from prefect_beluga.blocks._stores import EmbeddedVectorStoreBlock, PineconeVectorStoreBlock, VectorStoreBlock

__all__ = [
    "RagComponents",
    "load_rag_components",
    "DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK",
    "DEFAULT_CHAT_MODEL_BLOCK",
    "DEFAULT_EMBEDDER_BLOCK",
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
    "asave_default_blocks",
    "block_names",
    "load_block",
    "load_vector_store_block",
    "save_default_blocks",
]
