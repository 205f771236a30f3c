"""Create the Prefect block documents a deployment uses, from environment variables.

    python blocks/create_blocks.py                  # create or update them
    python blocks/create_blocks.py --no-overwrite   # keep documents that already exist

Reads OPENAI_API_KEY, OPENAI_BASE_URL, BELUGA_OPENAI_SERVER, BELUGA_CHAT_MODEL,
BELUGA_EMBEDDING_MODEL, BELUGA_EMBEDDING_DIMENSION, the usual Azure OpenAI variables
(AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION / AZURE_OPENAI_API_VERSION,
AZURE_OPENAI_CHAT_DEPLOYMENT, AZURE_OPENAI_EMBEDDING_DEPLOYMENT), PINECONE_API_KEY,
PINECONE_INDEX / PINECONE_HOST, PINECONE_NAMESPACE and BELUGA_STORE_PATH (see
`prefect_beluga.blocks`), and saves "beluga-chat", "beluga-embedder" and "beluga-store" (plus
"beluga-openai" / "beluga-azure-openai" / "beluga-pinecone" credentials) to the Prefect API that
PREFECT_API_URL points at (the local ephemeral API when unset). Without keys it saves the offline
chat model, the hashing embedder and the embedded store, and says which variable is missing.
"""

from __future__ import annotations

import argparse
import sys

from prefect_beluga.blocks import save_default_blocks
from prefect_beluga.core.errors import ValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Create the prefect-beluga block documents from environment variables.",
        epilog="Variables: see the docstring of prefect_beluga.blocks.",
    )
    parser.add_argument(
        "--no-overwrite", action="store_true", help="keep block documents that already exist instead of updating them"
    )
    args = parser.parse_args(argv)
    try:
        saved = save_default_blocks(overwrite=not args.no_overwrite)
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in saved.values():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
