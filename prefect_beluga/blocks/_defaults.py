"""The names of the block documents `save_default_blocks` creates and the flows load by default."""

DEFAULT_CHAT_MODEL_BLOCK = "beluga-chat"
DEFAULT_EMBEDDER_BLOCK = "beluga-embedder"
DEFAULT_STORE_BLOCK = "beluga-store"
DEFAULT_OPENAI_CREDENTIALS_BLOCK = "beluga-openai"
DEFAULT_PINECONE_CREDENTIALS_BLOCK = "beluga-pinecone"
DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK = "beluga-azure-openai"


__all__ = [
    "DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK",
    "DEFAULT_CHAT_MODEL_BLOCK",
    "DEFAULT_EMBEDDER_BLOCK",
    "DEFAULT_OPENAI_CREDENTIALS_BLOCK",
    "DEFAULT_PINECONE_CREDENTIALS_BLOCK",
    "DEFAULT_STORE_BLOCK",
]
