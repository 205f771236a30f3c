"""Documents: text with metadata, the unit of retrieval."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Document(BaseModel):
    """A piece of text with metadata.

    Examples:
        ```python
        from prefect_beluga.schema import Document

        doc = Document(page_content="Prefect runs flows.", metadata={"source": "a.md"})
        doc.get_content()  # -> 'Prefect runs flows.'
        ```
    """

    page_content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None

    def get_content(self) -> str:
        """The document's text (Beluga's `GetContent`)."""
        return self.page_content


__all__ = ["Document"]
