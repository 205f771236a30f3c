"""Server-Sent Events framing, and the cursor a `Last-Event-ID` carries.

Every event of a run's stream has an id `"<n>"`, its position in the run's mapped event sequence
(deterministic: any replica numbers a run's events the same way). An event announced from the
run's state rather than its stream (a wait for an approval) carries `"<n>~<pause key>"`, and so
does every later id on that connection: a client that reconnects with `Last-Event-ID` gets the
events after position `n` and no second announcement of a wait it has seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"^(?P<n>-1|\d{1,12})(?:~(?P<key>[A-Za-z0-9_-]{1,200}))?$")


@dataclass(frozen=True)
class Cursor:
    """Where a client is: it has seen events `0..n` and the wait `key` (None: none)."""

    n: int = -1
    key: str | None = None

    @classmethod
    def parse(cls, value: str | None) -> Cursor:
        """The cursor of a `Last-Event-ID` header (absent or empty: from the start).

        Raises:
            ValueError: not an id this server sent.
        """
        if value is None or not value.strip():
            return cls()
        match = _ID.match(value.strip())
        if match is None:
            raise ValueError("Last-Event-ID is not an event id of this server (expected '<n>' or '<n>~<key>')")
        return cls(int(match.group("n")), match.group("key"))

    def id(self) -> str:
        return str(self.n) if self.key is None else f"{self.n}~{self.key}"


def frame(data: str, *, id: str | None = None, event: str | None = None) -> bytes:
    """One SSE message: `id:`, `event:` and one `data:` line per line of `data`, then a blank line."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str = "keep-alive") -> bytes:
    """An SSE comment line: keeps proxies from closing an idle stream; clients ignore it."""
    return f": {text}\n\n".encode()


def retry_hint(milliseconds: int) -> bytes:
    """How long an `EventSource` waits before reconnecting."""
    return f"retry: {milliseconds}\n\n".encode()
