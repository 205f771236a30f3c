"""Loading local text and markdown files as Documents."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.schema import Document

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")


def load_documents(location: str | os.PathLike[str], *, suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> list[Document]:
    """Documents for a file, every matching file under a folder, or the files a glob matches.

    Each document's metadata has `source` (the path as given, joined with the file's relative
    path) and, for markdown, `title` (its first heading). Files are read as UTF-8 and sorted,
    so repeated loads give the same documents in the same order.

    Examples:
        >>> load_documents("docs/")            # every .txt/.md/.markdown/.rst below docs/
        >>> load_documents("notes/*.md")
    """
    text = os.fspath(location)
    path = Path(text).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    elif glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True) if Path(p).is_file())
    else:
        raise ValidationError(f"load_documents: {text!r} is not a file, a folder or a glob that exists")
    documents = []
    for file in files:
        try:
            content = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"load_documents: {file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        metadata: dict[str, str] = {"source": str(file)}
        if file.suffix.lower() in (".md", ".markdown"):
            title = next((line.lstrip("#").strip() for line in content.splitlines() if line.startswith("#")), None)
            if title:
                metadata["title"] = title
        if content.strip():
            documents.append(Document(page_content=content, metadata=metadata))
    return documents
