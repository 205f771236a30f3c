"""The ChatModel protocol: messages in, a ChatResult out; also a Runnable step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

import pydantic

from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.config import ConfigLike
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.core.streaming import emit_token, token_sink
from prefect_beluga.llms.config import Config
from prefect_beluga.schema import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    ChatResult,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

MessagesLike = str | BaseMessage | Sequence[Any]

_ROLES: dict[str, type[BaseMessage]] = {
    "system": SystemMessage, "developer": SystemMessage,
    "user": HumanMessage, "human": HumanMessage,
    "assistant": AIMessage, "ai": AIMessage,
    "tool": ToolMessage,
}


class ChatModel(Runnable, ABC):
    """A chat model: `generate(messages) -> ChatResult`, `stream(messages)` yields text.

    Implement `_agenerate` (and `_astream` to stream for real); the sync methods, message
    checking and the Runnable behaviour come from here.

    As a Runnable step (of a Chain or Graph) it takes
    `{"input": str}` (or a plain str), or `{"messages": [...]}`, optionally with `"system"`
    (a system prompt put first) and `"history"` (a memory's rendered conversation, added to the
    system prompt), and returns `{"output": str, "usage": {...}, "model": str}`.

    `stream` / `astream` take the same inputs (a message list too) and yield the reply's text
    deltas as `str`.

    Examples:
        ```python
        reply = llm.generate([SystemMessage("Be brief."), HumanMessage("What is AI?")])
        reply.content, reply.usage.total_tokens
        for delta in llm.stream("Tell me a story"):
            print(delta, end="")
        Chain([llm]).invoke({"input": "What is AI?"})["output"]
        ```
    """

    config: Config

    @property
    def model_name(self) -> str:
        return self.config.model_name

    @property
    def name(self) -> str:  # the step / task name in Prefect
        return self.__dict__.get("name") or f"{self.config.provider or 'chat'}:{self.config.model_name}"

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["name"] = value

    # -- to implement ----------------------------------------------------------------------

    @abstractmethod
    async def _agenerate(self, messages: list[AnyMessage]) -> ChatResult:
        """The reply to checked, non-empty `messages`."""

    async def _astream(self, messages: list[AnyMessage]) -> AsyncIterator[str | ChatResult]:
        """Text deltas of the reply, then the complete ChatResult (with usage) last.

        The default generates the whole reply and yields it as one delta.
        """
        result = await self._agenerate(messages)
        if result.content:
            yield result.content
        yield result

    # -- public API ------------------------------------------------------------------------

    async def agenerate(
        self, messages: MessagesLike, *, on_token: Callable[[str], Any] | None = None
    ) -> ChatResult:
        """The model's reply to `messages` (schema messages, OpenAI-style dicts, or a str).

        With `on_token`, the reply is streamed and `on_token(delta)` called for each text
        delta; the returned ChatResult still carries the full content and usage. Inside a
        chain or graph streamed with `tokens=True`, the reply is streamed too and each delta
        goes to the caller, tagged with the step or node running (see docs/streaming.md);
        otherwise the request is a plain one.
        """
        checked = to_messages(messages, where=f"{type(self).__name__}.generate")
        return await self._generate_checked(checked, on_token)

    async def _generate_checked(
        self, checked: list[AnyMessage], on_token: Callable[[str], Any] | None
    ) -> ChatResult:
        if on_token is None and token_sink() is not None:
            name = self.name

            def on_token(delta: str) -> None:
                emit_token(delta, default_node=name)

        if on_token is None:
            return await self._agenerate(checked)
        result: ChatResult | None = None
        async for item in self._astream(checked):
            if isinstance(item, ChatResult):
                result = item
            else:
                on_token(item)
        assert result is not None, f"{type(self).__name__}._astream yielded no ChatResult"
        return result

    def generate(self, messages: MessagesLike, *, on_token: Callable[[str], Any] | None = None) -> ChatResult:
        """Sync `agenerate`."""
        return run_sync(self.agenerate(messages, on_token=on_token))

    async def astream(self, input: Any, config: ConfigLike = None) -> AsyncIterator[str]:
        """Yield the reply's text deltas. `input`: messages, a str, or a Runnable input dict."""
        if isinstance(input, Mapping):
            messages = messages_from_state(input, where=f"{type(self).__name__}.stream")
        else:
            messages = to_messages(input, where=f"{type(self).__name__}.stream")
        async for item in self._astream(messages):
            if isinstance(item, str) and item:
                yield item

    def stream(self, input: Any, config: ConfigLike = None) -> Iterator[str]:
        """Sync `astream`."""
        return super().stream(input, config)

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> dict[str, Any]:
        """As a step: `{"input": ...}` / `{"messages": [...]}` in, `{"output", "usage", "model"}` out."""
        where = f"chat model {self.name!r}"
        if isinstance(input, str):
            input = {"input": input}
        if not isinstance(input, Mapping):
            raise ValidationError(
                f"{where} expects {{'input': str}} or {{'messages': [...]}} (or a str), got {type(input).__name__}"
            )
        result = await self._generate_checked(messages_from_state(input, where=where), None)
        return {"output": result.content, "usage": result.usage.model_dump(), "model": result.model}

    def __repr__(self) -> str:
        base = f", base_url={self.config.base_url!r}" if self.config.base_url else ""
        return f"{type(self).__name__}(model={self.config.model_name!r}{base})"


def to_messages(messages: Any, *, where: str) -> list[AnyMessage]:
    """Check and convert `messages`: schema messages, OpenAI-style dicts, or one str.

    Raises:
        ValidationError: empty, not a list, or an item that is not a message (named by index).
    """
    if isinstance(messages, str):
        if not messages.strip():
            raise ValidationError(f"{where}: the message is an empty string")
        return [HumanMessage(messages)]
    if isinstance(messages, BaseMessage):
        return [messages]  # type: ignore[list-item]
    if isinstance(messages, (bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ValidationError(
            f"{where}: expected a list of messages (SystemMessage, HumanMessage, AIMessage, "
            f"ToolMessage or {{'role', 'content'}} dicts) or a str, got {type(messages).__name__}"
        )
    if not messages:
        raise ValidationError(f"{where}: messages is empty; give at least one message")
    return [_to_message(item, index, where) for index, item in enumerate(messages)]


def _to_message(item: Any, index: int, where: str) -> AnyMessage:
    if isinstance(item, BaseMessage):
        return item  # type: ignore[return-value]
    if isinstance(item, Mapping):
        role = item.get("role", item.get("type"))
        cls = _ROLES.get(role) if isinstance(role, str) else None
        if cls is None:
            raise ValidationError(
                f"{where}: message {index} has role {role!r}; expected one of {sorted(_ROLES)}"
            )
        content = item.get("content")
        if not isinstance(content, str):
            raise ValidationError(
                f"{where}: message {index} ({role}) content must be a str, got {type(content).__name__}"
            )
        fields = {k: v for k, v in item.items() if k not in ("role", "type", "content")}
        try:
            return cls(content, **fields)  # type: ignore[return-value]
        except pydantic.ValidationError as exc:  # unknown or missing fields, e.g. tool_call_id
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ValidationError(f"{where}: message {index} ({role}) is invalid: {problems}") from None
    raise ValidationError(
        f"{where}: message {index} is a {type(item).__name__}; expected a SystemMessage, "
        f"HumanMessage, AIMessage, ToolMessage or a {{'role', 'content'}} dict"
    )


def messages_from_state(state: Mapping[str, Any], *, where: str) -> list[AnyMessage]:
    """The messages a chat step sends for a state dict (see `ChatModel`)."""
    system = state.get("system")
    history = state.get("history")
    if system is not None and not isinstance(system, str):
        raise ValidationError(f"{where}: 'system' must be a str, got {type(system).__name__}")
    if "messages" in state and state["messages"] is not None:
        messages = to_messages(state["messages"], where=f"{where} ('messages')")
    elif "input" in state:
        question = state["input"]
        if not isinstance(question, str):
            raise ValidationError(f"{where}: 'input' must be a str, got {type(question).__name__}")
        messages = to_messages(question, where=f"{where} ('input')")
    else:
        raise ValidationError(
            f"{where}: the input has neither 'input' nor 'messages' (keys: {sorted(state)})"
        )
    preamble = [part for part in (system, _history_text(history)) if part]
    if preamble:
        messages = [SystemMessage("\n\n".join(preamble)), *messages]
    return messages


def _history_text(history: Any) -> str:
    if isinstance(history, str) and history.strip():
        return f"Conversation so far:\n{history.strip()}"
    return ""


__all__ = ["ChatModel", "MessagesLike", "messages_from_state", "to_messages"]
