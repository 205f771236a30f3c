"""Where memories keep their turns: in this process, in files, or in a shared (fsspec) filesystem.

A scheduled deployment runs each conversation turn in a new flow run, often a new process;
`FileMemoryStore` keeps the turns of every session in a directory, so the next run picks the
conversation up where the last one left it. `SharedMemoryStore` keeps them in any fsspec
filesystem (a folder, S3, GCS, ...) as one object per turn, so workers on different machines
share conversations and concurrent turns of one session are all kept without a lock.

Every store takes a retention policy:

- `max_turns`: at most this many turns per session (the oldest are dropped as new ones come);
- `ttl`: seconds (or a `timedelta`) a session lives after its last turn; an expired session is
  removed when it is next read or written, and by `prune()`, which sweeps every session.

Both default to `None` (keep everything) in the library; `flows/rag_answer.py` sets its own
defaults (50 turns, 30 days).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect_beluga.core._checks import check_int, is_number
from prefect_beluga.core.errors import ValidationError

__all__ = ["FileMemoryStore", "InMemoryStore", "MemoryStore", "SharedMemoryStore", "check_session_id"]

Turn = tuple[str, str]
_Timed = tuple[str, str, float]  # a turn and when it was saved (epoch seconds)

_SESSION_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")


def check_session_id(session_id: str) -> str:
    """`session_id`, or a ValidationError: ids name files, so they are kept to a safe alphabet."""
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id) or session_id in (".", ".."):
        raise ValidationError(
            f"session_id must be 1-128 characters of letters, digits, '_', '.', '@' or '-', got {session_id!r}"
        )
    return session_id


def _check_retention(owner: str, max_turns: Any, ttl: Any) -> tuple[int | None, float | None]:
    check_int(max_turns, f"{owner}: max_turns", low=1, none=True, why=" (keep every turn)")
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if ttl is not None and not (is_number(ttl) and ttl > 0):
        raise ValidationError(f"{owner}: ttl must be seconds > 0, a timedelta, or None (never expire), got {ttl!r}")
    return max_turns, None if ttl is None else float(ttl)


class MemoryStore(ABC):
    """Keeps (input, output) turns per session id, under a retention policy.

    Args:
        max_turns: Most turns kept per session (oldest dropped first); None keeps all.
        ttl: Seconds (or a timedelta) a session is kept after its last turn; None keeps it forever.
        clock: Returns the time in epoch seconds (tests pass a fake one).
    """

    def __init__(self, *, max_turns: int | None = None, ttl: float | timedelta | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_turns, self.ttl = _check_retention(type(self).__name__, max_turns, ttl)
        self.clock = clock

    def expired(self, last_turn_at: float | None) -> bool:
        """Whether a session whose last turn was saved at `last_turn_at` has outlived `ttl`."""
        return self.ttl is not None and last_turn_at is not None and self.clock() - last_turn_at > self.ttl

    def describe(self) -> str:
        """Where the turns are kept, for logs and artifacts (never a secret)."""
        return type(self).__name__

    @abstractmethod
    def load(self, session_id: str) -> list[Turn]:
        """Every kept turn of the session, oldest first (an expired session is removed and gives [])."""

    @abstractmethod
    def append(self, session_id: str, turn: Turn) -> None:
        """Add one turn to the session (then drop turns beyond `max_turns`)."""

    @abstractmethod
    def clear(self, session_id: str) -> None:
        """Forget the session."""

    @abstractmethod
    def prune(self) -> int:
        """Remove every expired session (and turns beyond `max_turns`); returns the sessions removed."""


class InMemoryStore(MemoryStore):
    """Turns kept in this process (the default)."""

    def __init__(self, **retention: Any) -> None:
        super().__init__(**retention)
        self._sessions: dict[str, list[_Timed]] = defaultdict(list)
        self._lock = threading.Lock()

    def _live(self, session_id: str) -> list[_Timed]:
        turns = self._sessions.get(session_id)
        if turns and self.expired(turns[-1][2]):
            del self._sessions[session_id]
            return []
        return turns or []

    def load(self, session_id: str) -> list[Turn]:
        with self._lock:
            return [(user, reply) for user, reply, _ in self._live(session_id)]

    def append(self, session_id: str, turn: Turn) -> None:
        with self._lock:
            turns = self._live(session_id) + [(turn[0], turn[1], self.clock())]
            self._sessions[session_id] = turns[-self.max_turns:] if self.max_turns else turns

    def clear(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def prune(self) -> int:
        with self._lock:
            expired = [s for s, turns in self._sessions.items() if not turns or self.expired(turns[-1][2])]
            for session_id in expired:
                del self._sessions[session_id]
            return len(expired)


class FileMemoryStore(MemoryStore):
    """Turns kept as one JSON file per session under `directory` (`[[input, output, saved_at], ...]`).

    Writes are atomic (a temporary file renamed over the old one) and serialised across
    processes on this machine with a lock file, so concurrent flow runs never lose or duplicate
    a turn. For workers on several machines use `SharedMemoryStore`.

    Examples:
        ```python
        from datetime import timedelta

        from prefect_beluga.memory import FileMemoryStore, new_memory

        store = FileMemoryStore("beluga-memory", max_turns=50, ttl=timedelta(days=30))
        chat_memory = new_memory("window", k=10, store=store, session_id="alice")
        store.prune()   # e.g. from a daily scheduled flow: drop expired sessions
        ```
    """

    def __init__(self, directory: str | os.PathLike[str], **retention: Any) -> None:
        super().__init__(**retention)
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"FileMemoryStore({self.directory})"

    def _path(self, session_id: str) -> Path:
        return self.directory / f"{check_session_id(session_id)}.json"

    @contextmanager
    def _locked(self, session_id: str) -> Iterator[Path]:
        path = self._path(session_id)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield path
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, path: Path) -> list[_Timed]:
        try:
            text = path.read_text("utf-8")
            modified = path.stat().st_mtime
        except FileNotFoundError:
            return []
        try:
            turns = []
            for item in json.loads(text):
                user, reply, *rest = item
                turns.append((str(user), str(reply), float(rest[0]) if rest else modified))  # older files: no time
            return turns
        except (ValueError, TypeError) as exc:
            raise ValidationError(
                f"memory file {path} is not a list of [input, output, saved_at] items: {exc}"
            ) from None

    def _write(self, path: Path, turns: list[_Timed]) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump([list(t) for t in turns], file, ensure_ascii=False)
        os.replace(temporary, path)

    def _expire(self, session_id: str) -> list[_Timed]:
        """The session's turns, after removing it if it expired (call under the lock)."""
        path = self._path(session_id)
        turns = self._read(path)
        if turns and self.expired(turns[-1][2]):
            path.unlink(missing_ok=True)
            return []
        return turns

    def load(self, session_id: str) -> list[Turn]:
        path = self._path(session_id)
        turns = self._read(path)
        if turns and self.expired(turns[-1][2]):
            with self._locked(session_id):
                turns = self._expire(session_id)
        return [(user, reply) for user, reply, _ in turns]

    def append(self, session_id: str, turn: Turn) -> None:
        with self._locked(session_id) as path:
            turns = self._expire(session_id) + [(turn[0], turn[1], self.clock())]
            self._write(path, turns[-self.max_turns :] if self.max_turns else turns)

    def clear(self, session_id: str) -> None:
        with self._locked(session_id) as path:
            path.unlink(missing_ok=True)
        path.with_suffix(".lock").unlink(missing_ok=True)

    def prune(self) -> int:
        removed = 0
        for path in sorted(self.directory.glob("*.json")):
            with self._locked(path.stem):
                turns = self._read(path)
                if not turns or self.expired(turns[-1][2]):
                    path.unlink(missing_ok=True)
                    removed += 1
                elif self.max_turns and len(turns) > self.max_turns:
                    self._write(path, turns[-self.max_turns :])
        return removed


class SharedMemoryStore(MemoryStore):
    """Turns kept in an fsspec filesystem — a shared folder, S3, GCS, Azure — one object per turn.

    Each turn is written once as `<root>/<session>/<time_ns>-<random>.json` and never rewritten:
    two workers answering one session at once both add their object, so no turn is lost and no
    lock is needed (object stores have none). Reading lists the session's objects in name order
    (the writer's clock, then a random tie-break). Retention deletes objects: those beyond
    `max_turns`, and every object of a session whose newest turn is older than `ttl`.

    This module knows nothing of Prefect: `prefect_beluga.memory_blocks` builds this store from
    a Prefect filesystem block (`LocalFileSystem`, `RemoteFileSystem`).

    Args:
        fs: An fsspec filesystem (`fsspec.filesystem("s3")`, a block's `.filesystem`, ...).
        root: The folder (or bucket path) that holds the sessions.
        label: How logs and artifacts name the store (e.g. the block's name).

    Examples:
        ```python
        import fsspec

        from prefect_beluga.memory import SharedMemoryStore

        store = SharedMemoryStore(fsspec.filesystem("file"), "/shared/beluga-memory", max_turns=50)
        ```
    """

    def __init__(self, fs: Any, root: str, *, label: str | None = None, **retention: Any) -> None:
        super().__init__(**retention)
        for method in ("pipe_file", "cat_file", "ls", "rm", "mv", "makedirs"):
            if not callable(getattr(fs, method, None)):
                raise ValidationError(
                    f"SharedMemoryStore: fs must be an fsspec filesystem (no {method}()), got {type(fs).__name__}"
                )
        if not isinstance(root, str) or not root:
            raise ValidationError(f"SharedMemoryStore: root must be a non-empty path, got {root!r}")
        self.fs, self.root, self.label = fs, root.rstrip("/"), label

    def describe(self) -> str:
        return f"SharedMemoryStore({self.label or self.root})"

    def _folder(self, session_id: str) -> str:
        return f"{self.root}/{check_session_id(session_id)}"

    def _objects(self, folder: str) -> list[str]:
        try:
            names = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        return sorted(
            n for n in names if n.rsplit("/", 1)[-1].endswith(".json") and not n.rsplit("/", 1)[-1].startswith(".")
        )

    @staticmethod
    def _saved_at(name: str) -> float:
        return int(name.rsplit("/", 1)[-1].split("-", 1)[0]) / 1e9

    def _remove(self, names: list[str]) -> None:
        for name in names:
            try:
                self.fs.rm(name)
            except FileNotFoundError:
                pass  # another worker removed it first

    def _kept(self, session_id: str) -> list[str]:
        names = self._objects(self._folder(session_id))
        if names and self.expired(self._saved_at(names[-1])):
            self._remove(names)
            return []
        if self.max_turns and len(names) > self.max_turns:
            self._remove(names[: -self.max_turns])
            names = names[-self.max_turns :]
        return names

    def load(self, session_id: str) -> list[Turn]:
        turns = []
        for name in self._kept(session_id):
            try:
                user, reply = json.loads(self.fs.cat_file(name))[:2]
            except FileNotFoundError:
                continue  # trimmed by another worker meanwhile
            except (ValueError, TypeError) as exc:
                raise ValidationError(f"memory object {name} is not an [input, output] pair: {exc}") from None
            turns.append((str(user), str(reply)))
        return turns

    def append(self, session_id: str, turn: Turn) -> None:
        folder = self._folder(session_id)
        self._kept(session_id)  # expire the session first: a new turn starts it afresh
        self.fs.makedirs(folder, exist_ok=True)
        name = f"{int(self.clock() * 1e9):020d}-{uuid.uuid4().hex}.json"
        temporary = f"{folder}/.{name}.tmp"  # readers skip it; renamed into place whole
        self.fs.pipe_file(temporary, json.dumps([turn[0], turn[1]], ensure_ascii=False).encode("utf-8"))
        self.fs.mv(temporary, f"{folder}/{name}")
        if self.max_turns:
            self._kept(session_id)

    def clear(self, session_id: str) -> None:
        self._remove(self._objects(self._folder(session_id)))

    def prune(self) -> int:
        try:
            folders = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return 0
        removed = 0
        for folder in sorted(folders):
            session_id = folder.rstrip("/").rsplit("/", 1)[-1]
            if _SESSION_ID.match(session_id) and self._objects(folder) and not self._kept(session_id):
                removed += 1
        return removed
