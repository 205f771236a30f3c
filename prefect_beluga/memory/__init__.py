"""Conversation memory for chains, per session, optionally persisted across flow runs.

Examples:
    ```python
    from prefect_beluga import Chain, memory


    def answer(state):
        return {"output": f"you said {state['input']!r}"}


    chat = Chain([answer], memory=memory.new_memory(memory.MemoryType.WINDOW, k=3))
    chat.invoke({"input": "hi", "session_id": "alice"})
    chat.invoke({"input": "again", "session_id": "alice"})["history"]  # -> "Human: hi\\nAI: you said 'hi'"
    ```

    Kept in files, so a scheduled deployment continues the conversation in its next run:

    ```python
    store = memory.FileMemoryStore("beluga-memory")
    chat = Chain([answer], memory=memory.new_memory("token_window", max_tokens=1500, store=store))
    ```

    Kept at most 50 turns per session, for 30 days after a session's last turn:

    ```python
    from datetime import timedelta

    store = memory.FileMemoryStore("beluga-memory", max_turns=50, ttl=timedelta(days=30))
    ```
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.memory.base import BaseMemory
from prefect_beluga.memory.buffer import BufferMemory, TokenWindowMemory, WindowMemory
from prefect_beluga.memory.store import FileMemoryStore, InMemoryStore, MemoryStore, SharedMemoryStore


class MemoryType(str, Enum):
    """The kinds of memory `new_memory` builds."""

    BUFFER = "buffer"
    WINDOW = "window"
    TOKEN_WINDOW = "token_window"


_MEMORY_CLASSES: dict[MemoryType, type[BaseMemory]] = {
    MemoryType.BUFFER: BufferMemory,
    MemoryType.WINDOW: WindowMemory,
    MemoryType.TOKEN_WINDOW: TokenWindowMemory,
}


def new_memory(memory_type: MemoryType | str = MemoryType.BUFFER, **options: Any) -> BaseMemory:
    """Build a memory of `memory_type` (a `MemoryType` or its name) with `options`."""
    try:
        kind = MemoryType(memory_type.value if isinstance(memory_type, MemoryType) else str(memory_type).lower())
    except ValueError:
        raise ValidationError(
            f"unknown memory type {memory_type!r}; expected one of {[m.name for m in MemoryType]}"
        ) from None
    return _MEMORY_CLASSES[kind](**options)


__all__ = [
    "BaseMemory",
    "BufferMemory",
    "FileMemoryStore",
    "InMemoryStore",
    "MemoryStore",
    "MemoryType",
    "SharedMemoryStore",
    "TokenWindowMemory",
    "WindowMemory",
    "new_memory",
]
