"""Buffer memory (every turn), window memory (the last `k`) and token-window memory."""

from __future__ import annotations

from typing import Any

from prefect_beluga.core._checks import check_int
from prefect_beluga.memory.base import BaseMemory, render
from prefect_beluga.memory.store import Turn

__all__ = ["BufferMemory", "TokenWindowMemory", "WindowMemory"]


class BufferMemory(BaseMemory):
    """Remembers every turn.

    Examples:
        ```python
        from prefect_beluga.memory import BufferMemory

        memory = BufferMemory()
        memory.save_context({"input": "hi"}, {"output": "hello"})
        memory.load_memory_variables({})  # -> {'history': 'Human: hi\\nAI: hello'}
        ```
    """

    def select(self, turns: list[Turn]) -> list[Turn]:
        return turns


class WindowMemory(BaseMemory):
    """Remembers the last `k` turns.

    Examples:
        ```python
        from prefect_beluga.memory import WindowMemory

        memory = WindowMemory(k=3)
        ```
    """

    def __init__(self, k: int = 5, **options: Any) -> None:
        check_int(k, "WindowMemory: k", low=1)
        super().__init__(**options)
        self.k = k

    def select(self, turns: list[Turn]) -> list[Turn]:
        return turns[-self.k:]


class TokenWindowMemory(BaseMemory):
    """Remembers the most recent turns whose transcript fits in `max_tokens` (tiktoken count).

    Examples:
        ```python
        from prefect_beluga.memory import TokenWindowMemory

        memory = TokenWindowMemory(max_tokens=1000, model="gpt-4o-mini")
        ```
    """

    def __init__(self, max_tokens: int = 2000, model: str | None = None, **options: Any) -> None:
        check_int(max_tokens, "TokenWindowMemory: max_tokens", low=1)
        super().__init__(**options)
        self.max_tokens = max_tokens
        self.model = model

    def select(self, turns: list[Turn]) -> list[Turn]:
        from prefect_beluga.tokens import count_tokens

        kept: list[Turn] = []
        for turn in reversed(turns):
            if count_tokens(render([turn, *kept]), self.model) > self.max_tokens:
                break
            kept.insert(0, turn)
        return kept
