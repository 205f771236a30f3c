"""Cutting documents into chunks that fit a token budget, with overlap."""

from __future__ import annotations

import re
from collections.abc import Sequence

from prefect_beluga.core._checks import check_int, is_int
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.schema import Document
from prefect_beluga.tokens import count_tokens, split_by_tokens

__all__ = ["TokenTextSplitter"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n{2,}")


class TokenTextSplitter:
    """Packs whole sentences into chunks of at most `chunk_size` tokens (tiktoken).

    Consecutive chunks share up to `chunk_overlap` tokens of whole sentences, so a fact cut at
    a boundary is still whole in one chunk. A sentence longer than a chunk is cut by tokens.

    Args:
        chunk_size: Most tokens in a chunk.
        chunk_overlap: Most tokens repeated from the end of one chunk at the start of the next.
        model: Whose tokenizer counts (default: cl100k_base, as OpenAI's embedding models).

    Examples:
        ```python
        from pathlib import Path

        from prefect_beluga.rag import TokenTextSplitter, load_documents

        Path("docs").mkdir(exist_ok=True)
        Path("docs/intro.md").write_text("# Intro")
        splitter = TokenTextSplitter(chunk_size=200, chunk_overlap=20)
        chunks = splitter.split_documents(load_documents("docs/"))
        chunks[0].metadata["path"], chunks[0].metadata["chunk"]  # -> ('intro.md', 0)
        ```
    """

    def __init__(self, chunk_size: int = 400, chunk_overlap: int = 50, model: str | None = None) -> None:
        check_int(chunk_size, "chunk_size", low=1)
        if not is_int(chunk_overlap) or not 0 <= chunk_overlap < chunk_size:
            raise ValidationError(
                f"chunk_overlap must be an int with 0 <= chunk_overlap < chunk_size ({chunk_size}), "
                f"got {chunk_overlap!r}"
            )
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.model = model

    def _sentences(self, text: str) -> list[tuple[str, int]]:
        pieces: list[tuple[str, int]] = []
        for sentence in _SENTENCE_END.split(text):
            sentence = " ".join(sentence.split())
            if not sentence:
                continue
            tokens = count_tokens(sentence, self.model)
            if tokens <= self.chunk_size:
                pieces.append((sentence, tokens))
            else:
                pieces += [
                    (part, count_tokens(part, self.model))
                    for part in split_by_tokens(sentence, self.chunk_size, 0, self.model)
                ]
        return pieces

    def split_text(self, text: str) -> list[str]:
        """The chunks of `text`, in order."""
        if not isinstance(text, str):
            raise ValidationError(f"split_text expects a str, got {type(text).__name__}")
        chunks: list[str] = []
        current: list[tuple[str, int]] = []
        for sentence, tokens in self._sentences(text):
            # +1 per joint: the space between sentences is usually its own token or merges.
            if current and sum(t for _, t in current) + tokens + len(current) > self.chunk_size:
                chunks.append(" ".join(s for s, _ in current))
                current = self._overlap(current, room=self.chunk_size - tokens - 1)
            current.append((sentence, tokens))
        if current:
            chunks.append(" ".join(s for s, _ in current))
        return chunks

    def _overlap(self, previous: list[tuple[str, int]], room: int) -> list[tuple[str, int]]:
        """The trailing sentences of `previous` to repeat: at most `chunk_overlap` tokens."""
        kept: list[tuple[str, int]] = []
        budget = min(self.chunk_overlap, room)
        for sentence, tokens in reversed(previous):
            if tokens > budget:
                break
            kept.insert(0, (sentence, tokens))
            budget -= tokens + 1
        return kept

    def split_documents(self, documents: Sequence[Document]) -> list[Document]:
        """Chunks of every document; each keeps the metadata and gains `chunk` (its index)."""
        chunks = []
        for position, document in enumerate(documents):
            if not isinstance(document, Document):
                raise ValidationError(
                    f"split_documents: item {position} is {type(document).__name__}, expected Document"
                )
            for index, text in enumerate(self.split_text(document.page_content)):
                chunks.append(Document(page_content=text, metadata={**document.metadata, "chunk": index}))
        return chunks
