"""The memory protocol shared by every memory type."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.memory.store import InMemoryStore, MemoryStore, Turn, check_session_id

__all__ = ["BaseMemory", "render"]

DEFAULT_SESSION = "default"


class BaseMemory(ABC):
    """Conversation memory: what a chain remembers between invocations.

    A chain with `memory=` merges `load_memory_variables(input)` into its input before the
    first step and calls `save_context(input, output)` after the last. Turns are kept per
    session: the input's `session_id` key when present, else the memory's `session_id` —
    so one memory serves many users without cross-talk.

    Args:
        memory_key: State key under which the rendered history is loaded.
        input_key: State key holding the user's turn.
        output_key: State key holding the reply.
        session_id: The session used when the input names none.
        store: Where turns are kept (default: this process; `FileMemoryStore` persists them
            across flow runs and processes).
    """

    def __init__(
        self,
        *,
        memory_key: str = "history",
        input_key: str = "input",
        output_key: str = "output",
        session_id: str = DEFAULT_SESSION,
        store: MemoryStore | None = None,
    ) -> None:
        if store is not None and not isinstance(store, MemoryStore):
            raise ValidationError(f"{type(self).__name__}: store must be a MemoryStore, got {type(store).__name__}")
        self.memory_key = memory_key
        self.input_key = input_key
        self.output_key = output_key
        self.session_id = check_session_id(session_id)
        self.store = store if store is not None else InMemoryStore()

    def session_of(self, inputs: Mapping[str, Any] | None) -> str:
        """The session a call belongs to: `inputs["session_id"]`, else the memory's own."""
        if inputs and inputs.get("session_id") is not None:
            return check_session_id(inputs["session_id"])
        return self.session_id

    @abstractmethod
    def select(self, turns: list[Turn]) -> list[Turn]:
        """The turns to show the model, from all the session's turns."""

    def turns(self, session_id: str | None = None) -> list[Turn]:
        """The remembered (input, output) pairs shown to the model, oldest first."""
        return self.select(self.store.load(session_id or self.session_id))

    def clear(self, session_id: str | None = None) -> None:
        """Forget the session."""
        self.store.clear(session_id or self.session_id)

    def load_memory_variables(self, inputs: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Return `{memory_key: "Human: ...\\nAI: ..."}` for the session's remembered turns."""
        return {self.memory_key: render(self.turns(self.session_of(inputs)))}

    def save_context(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Remember one turn: `inputs[input_key]` and `outputs[output_key]`."""
        for name, values, key in (("inputs", inputs, self.input_key), ("outputs", outputs, self.output_key)):
            if key not in values:
                raise ValidationError(
                    f"{type(self).__name__}.save_context: {name} has no {key!r} key "
                    f"(keys: {sorted(values)}); set {name[:-1]}_key= to the key that holds the turn"
                )
        self.store.append(self.session_of(inputs), (str(inputs[self.input_key]), str(outputs[self.output_key])))


def render(turns: list[Turn]) -> str:
    """Turns as a transcript: `Human: ...` / `AI: ...` lines."""
    return "\n".join(line for user, reply in turns for line in (f"Human: {user}", f"AI: {reply}"))
