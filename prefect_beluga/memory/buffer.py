"""Buffer memory (every turn) and window memory (the last `k` turns)."""

from __future__ import annotations

from collections import deque
from typing import Any

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.memory.base import BaseMemory


class BufferMemory(BaseMemory):
    """Remembers every turn.

    Examples:
        >>> memory = BufferMemory()
        >>> memory.save_context({"input": "hi"}, {"output": "hello"})
        >>> memory.load_memory_variables({})
        {'history': 'Human: hi\\nAI: hello'}
    """

    def __init__(self, **keys: Any) -> None:
        super().__init__(**keys)
        self._turns: list[tuple[str, str]] = []

    def turns(self) -> list[tuple[str, str]]:
        return list(self._turns)

    def _append(self, user: str, reply: str) -> None:
        self._turns.append((user, reply))

    def clear(self) -> None:
        self._turns.clear()


class WindowMemory(BaseMemory):
    """Remembers the last `k` turns.

    Examples:
        >>> memory = WindowMemory(k=1)
    """

    def __init__(self, k: int = 5, **keys: Any) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValidationError(f"WindowMemory: k must be an int >= 1, got {k!r}")
        super().__init__(**keys)
        self.k = k
        self._turns: deque[tuple[str, str]] = deque(maxlen=k)

    def turns(self) -> list[tuple[str, str]]:
        return list(self._turns)

    def _append(self, user: str, reply: str) -> None:
        self._turns.append((user, reply))

    def clear(self) -> None:
        self._turns.clear()
