"""Loading local text and markdown files as Documents, each under one source identity.

A file's identity is its resolved absolute path (symlinks and `..` resolved, POSIX spelling):
`docs`, `./docs/` and `/home/me/project/docs` name the same files, so ingesting a folder under
another spelling replaces its chunks instead of adding copies. Each document also records the
folder it was loaded from (`root`) and its path relative to that folder (`path`), which is what
citations show.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.schema import Document

__all__ = ["SourceScope", "load_documents", "source_scope"]

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")


@dataclass(frozen=True)
class SourceScope:
    """What one ingest covers: a file, every text file under a folder, or what a glob matches.

    `contains(source)` says whether a stored source (a resolved absolute path) belongs to this
    scope, so pruning the chunks of deleted files never touches files ingested from elsewhere.

    Examples:
        ```python
        from pathlib import Path

        from prefect_beluga.rag import source_scope

        Path("docs").mkdir(exist_ok=True)  # the folder must exist
        scope = source_scope("docs/")
        scope.contains(str(Path("docs/a.md").resolve()))  # -> True
        ```
    """

    kind: str  # "file", "folder" or "glob"
    root: str  # resolved absolute folder: the folder, the file's folder, or the glob's fixed part
    target: str  # the file, the folder, or the glob pattern made absolute
    suffixes: tuple[str, ...] = TEXT_SUFFIXES

    def contains(self, source: str) -> bool:
        path = PurePosixPath(source)
        if self.kind == "file":
            return source == self.target
        if self.kind == "folder":
            root = PurePosixPath(self.root)
            return path != root and root in path.parents and path.suffix.lower() in self.suffixes
        return _glob_match(PurePosixPath(self.target).parts, path.parts)

    def relative(self, source: str) -> str:
        """`source` relative to the scope's root (as citations show it)."""
        try:
            return PurePosixPath(source).relative_to(self.root).as_posix()
        except ValueError:
            return source


def _glob_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether path `parts` match glob `pattern` parts (`**` is zero or more folders, as glob(recursive=True))."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _glob_match(pattern[1:], parts[1:])


def source_scope(location: str | os.PathLike[str], *, suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> SourceScope:
    """The `SourceScope` of a file, folder or glob (a `ValidationError` if it names none of them)."""
    text = os.fspath(location)
    path = Path(text).expanduser()
    if path.is_file():
        resolved = path.resolve()
        return SourceScope("file", resolved.parent.as_posix(), resolved.as_posix(), suffixes)
    if path.is_dir():
        resolved = path.resolve().as_posix()
        return SourceScope("folder", resolved, resolved, suffixes)
    if glob.has_magic(text):
        parts = Path(os.path.expanduser(text)).parts
        fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
        base = Path(*parts[:fixed]) if fixed else Path(".")
        root = base.resolve()
        return SourceScope("glob", root.as_posix(), (root / Path(*parts[fixed:])).as_posix(), suffixes)
    raise ValidationError(f"load_documents: {text!r} is not a file, a folder or a glob that exists")


def load_documents(location: str | os.PathLike[str], *, suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> list[Document]:
    """Documents for a file, every matching file under a folder, or the files a glob matches.

    Each document's metadata has `source` (the file's resolved absolute path: one identity per
    file, however the location was spelled), `root` (the folder loaded from, resolved),
    `path` (the file relative to `root`) and, for markdown, `title` (its first heading). Files
    are read as UTF-8 and sorted, so repeated loads give the same documents in the same order.

    Examples:
        ```python
        from pathlib import Path

        from prefect_beluga.rag import load_documents

        Path("docs").mkdir(exist_ok=True)
        Path("docs/intro.md").write_text("# Intro")
        load_documents("docs/")            # every .txt/.md/.markdown/.rst below docs/
        load_documents("notes/*.md")       # -> []: no such files
        ```
    """
    text = os.fspath(location)
    scope = source_scope(text, suffixes=suffixes)
    path = Path(text).expanduser()
    if scope.kind == "file":
        files = [path]
    elif scope.kind == "folder":
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    else:
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True) if Path(p).is_file())
    documents = []
    for file in files:
        try:
            content = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"load_documents: {file} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        source = file.resolve().as_posix()
        metadata: dict[str, str] = {"source": source, "root": scope.root, "path": scope.relative(source)}
        if file.suffix.lower() in (".md", ".markdown"):
            title = next((line.lstrip("#").strip() for line in content.splitlines() if line.startswith("#")), None)
            if title:
                metadata["title"] = title
        if content.strip():
            documents.append(Document(page_content=content, metadata=metadata))
    return documents
