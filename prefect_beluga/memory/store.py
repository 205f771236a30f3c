"""Where memories keep their turns: in this process, or in files that outlive it.

A scheduled deployment runs each conversation turn in a new flow run, often a new process;
`FileMemoryStore` keeps the turns of every session in a directory, so the next run picks the
conversation up where the last one left it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect_beluga.core.errors import ValidationError

Turn = tuple[str, str]

_SESSION_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")


def check_session_id(session_id: str) -> str:
    """`session_id`, or a ValidationError: ids name files, so they are kept to a safe alphabet."""
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id) or session_id in (".", ".."):
        raise ValidationError(
            f"session_id must be 1-128 characters of letters, digits, '_', '.', '@' or '-', got {session_id!r}"
        )
    return session_id


class MemoryStore(ABC):
    """Keeps (input, output) turns per session id."""

    @abstractmethod
    def load(self, session_id: str) -> list[Turn]:
        """Every turn of the session, oldest first."""

    @abstractmethod
    def append(self, session_id: str, turn: Turn) -> None:
        """Add one turn to the session."""

    @abstractmethod
    def clear(self, session_id: str) -> None:
        """Forget the session."""


class InMemoryStore(MemoryStore):
    """Turns kept in this process (the default)."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[Turn]] = defaultdict(list)
        self._lock = threading.Lock()

    def load(self, session_id: str) -> list[Turn]:
        with self._lock:
            return list(self._sessions.get(session_id, ()))

    def append(self, session_id: str, turn: Turn) -> None:
        with self._lock:
            self._sessions[session_id].append(turn)

    def clear(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)


class FileMemoryStore(MemoryStore):
    """Turns kept as one JSON file per session under `directory`.

    Writes are atomic (a temporary file renamed over the old one) and serialised across
    processes with a lock file, so concurrent flow runs never lose or duplicate a turn.

    Examples:
        >>> store = FileMemoryStore("~/.beluga/memory")
        >>> chat_memory = new_memory("window", k=10, store=store, session_id="alice")
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)

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

    def load(self, session_id: str) -> list[Turn]:
        path = self._path(session_id)
        if not path.exists():
            return []
        try:
            return [(str(user), str(reply)) for user, reply in json.loads(path.read_text("utf-8"))]
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"memory file {path} is not a list of [input, output] pairs: {exc}") from None

    def append(self, session_id: str, turn: Turn) -> None:
        with self._locked(session_id) as path:
            turns = self.load(session_id) + [turn]
            handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(turns, file, ensure_ascii=False)
            os.replace(temporary, path)

    def clear(self, session_id: str) -> None:
        with self._locked(session_id) as path:
            path.unlink(missing_ok=True)
