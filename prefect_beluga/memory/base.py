"""The memory protocol shared by every memory type."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from prefect_beluga.core.errors import ValidationError


class BaseMemory(ABC):
    """Conversation memory: what a chain remembers between invocations.

    A chain with `memory=` merges `load_memory_variables(input)` into its input before the
    first step and calls `save_context(input, output)` after the last.

    Args:
        memory_key: State key under which the rendered history is loaded.
        input_key: State key holding the user's turn.
        output_key: State key holding the reply.
    """

    def __init__(
        self, *, memory_key: str = "history", input_key: str = "input", output_key: str = "output"
    ) -> None:
        self.memory_key = memory_key
        self.input_key = input_key
        self.output_key = output_key
        self._lock = threading.Lock()

    @abstractmethod
    def turns(self) -> list[tuple[str, str]]:
        """The remembered (input, output) pairs, oldest first."""

    @abstractmethod
    def _append(self, user: str, reply: str) -> None: ...

    @abstractmethod
    def clear(self) -> None:
        """Forget everything."""

    def load_memory_variables(self, inputs: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Return `{memory_key: "Human: ...\\nAI: ..."}` for the remembered turns."""
        lines = []
        for user, reply in self.turns():
            lines += [f"Human: {user}", f"AI: {reply}"]
        return {self.memory_key: "\n".join(lines)}

    def save_context(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Remember one turn: `inputs[input_key]` and `outputs[output_key]`."""
        for name, values, key in (("inputs", inputs, self.input_key), ("outputs", outputs, self.output_key)):
            if key not in values:
                raise ValidationError(
                    f"{type(self).__name__}.save_context: {name} has no {key!r} key "
                    f"(keys: {sorted(values)}); set {name[:-1]}_key= to the key that holds the turn"
                )
        with self._lock:
            self._append(str(inputs[self.input_key]), str(outputs[self.output_key]))
