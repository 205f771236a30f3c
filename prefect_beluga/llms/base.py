"""The ChatModel protocol: messages in, a ChatResult out; also a Runnable step."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

import pydantic

from prefect_beluga.core import _telemetry
from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.config import ConfigLike
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.fingerprint import key_of, public_settings, secret_digest
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.core.streaming import cancellable, emit_token, token_sink
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.servers import Capabilities
from prefect_beluga.schema import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    ChatResult,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from prefect_beluga.usage._budget import before_request, current_budget
from prefect_beluga.usage._limits import priced_as

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
        from prefect_beluga import Chain
        from prefect_beluga.llms import OfflineChatModel
        from prefect_beluga.schema import HumanMessage, SystemMessage

        llm = OfflineChatModel()  # any ChatModel: OpenAIChatModel, AzureOpenAIChatModel, ...
        reply = llm.generate([SystemMessage("Be brief."), HumanMessage("What is AI?")])
        reply.content, reply.usage.total_tokens
        for delta in llm.stream("Tell me a story"):
            print(delta, end="")
        Chain([llm]).invoke({"input": "What is AI?"})["output"]
        ```
    """

    config: Config

    #: What the model's server supports (`llms.servers.Capabilities`); providers for
    #: OpenAI-compatible servers set it from the `server` preset and `Config.capabilities`.
    #: Agents choose how to ask for structured output from it.
    capabilities: Capabilities = Capabilities()

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
        """The reply to checked, non-empty `messages`.

        A model that supports tool calling or structured output also accepts the keyword
        arguments `tools` (OpenAI-style function entries), `response_format` (OpenAI's
        `{"type": "json_schema", ...}`) and `tool_choice` ("required" or a named function);
        they are passed only when a caller gives them.
        """

    async def _astream(self, messages: list[AnyMessage], **request: Any) -> AsyncIterator[str | ChatResult]:
        """Text deltas of the reply, then the complete ChatResult (with usage) last.

        The default generates the whole reply and yields it as one delta.
        """
        result = await self._agenerate(messages, **request)
        if result.content:
            yield result.content
        yield result

    # -- public API ------------------------------------------------------------------------

    async def agenerate(
        self,
        messages: MessagesLike,
        *,
        on_token: Callable[[str], Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        response_format: Mapping[str, Any] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """The model's reply to `messages` (schema messages, OpenAI-style dicts, or a str).

        With `on_token`, the reply is streamed and `on_token(delta)` called for each text
        delta; the returned ChatResult still carries the full content and usage. Inside a
        chain or graph streamed with `tokens=True`, the reply is streamed too and each delta
        goes to the caller, tagged with the step or node running (see docs/streaming.md);
        otherwise the request is a plain one. `tools` (OpenAI-style
        `{"type": "function", "function": {...}}` entries) lets the model ask for tool calls
        (`result.message.tool_calls`); `response_format` asks for structured output (e.g.
        `{"type": "json_schema", "json_schema": {...}}`); `tool_choice` ("required", or
        `{"type": "function", "function": {"name": ...}}`) forces a tool call.
        """
        checked = to_messages(messages, where=f"{type(self).__name__}.generate")
        return await self._generate_checked(
            checked, on_token, self._request_options(tools, response_format, tool_choice)
        )

    async def _generate_checked(
        self,
        checked: list[AnyMessage],
        on_token: Callable[[str], Any] | None,
        request: dict[str, Any] | None = None,
    ) -> ChatResult:
        request = request or {}
        if current_budget() is None:  # no usage limits in this run: one context-variable lookup
            return await self._send(checked, on_token, request)
        # The run's usage limits (prefect_beluga.usage): a request past them is never sent.
        ticket = before_request(*priced_as(self.config), checked, request.get("tools"), default_step=self.name)
        if ticket is None:
            return await self._send(checked, on_token, request)
        try:
            result = await self._send(checked, on_token, request)
        except BaseException:
            ticket.failed()
            raise
        ticket.settle(result.usage)
        return result

    async def _send(
        self, checked: list[AnyMessage], on_token: Callable[[str], Any] | None, request: dict[str, Any]
    ) -> ChatResult:
        if on_token is None and token_sink() is not None:
            name = self.name

            def on_token(delta: str) -> None:
                emit_token(delta, default_node=name)

        # A caller that stops reading the stream this runs for cancels the request in flight.
        # The call is a GenAI span when an OpenTelemetry SDK is configured (core/_telemetry.py).
        with cancellable(), _telemetry.chat_call(self, checked, request) as call:
            result: ChatResult | None = None
            if on_token is None:
                result = await self._agenerate(checked, **request)
            else:
                async for item in self._astream(checked, **request):
                    if isinstance(item, ChatResult):
                        result = item
                    else:
                        on_token(item)
            if result is not None:
                call.chat_result(result)
        assert result is not None, f"{type(self).__name__}._astream yielded no ChatResult"
        return result

    def generate(
        self,
        messages: MessagesLike,
        *,
        on_token: Callable[[str], Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        response_format: Mapping[str, Any] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """Sync `agenerate`."""
        return run_sync(self.agenerate(
            messages, on_token=on_token, tools=tools, response_format=response_format, tool_choice=tool_choice
        ))

    def _request_options(
        self,
        tools: Sequence[Mapping[str, Any]] | None,
        response_format: Mapping[str, Any] | None,
        tool_choice: str | Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`tools` / `response_format` / `tool_choice` as keyword arguments for `_agenerate`, checked."""
        request: dict[str, Any] = {}
        if tools:
            if isinstance(tools, (str, bytes, Mapping)) or not all(isinstance(t, Mapping) for t in tools):
                raise ValidationError(f"chat model {self.name!r}: tools must be a list of tool definitions (dicts)")
            request["tools"] = [dict(t) for t in tools]
        if response_format is not None:
            if not isinstance(response_format, Mapping):
                raise ValidationError(f"chat model {self.name!r}: response_format must be a dict")
            request["response_format"] = dict(response_format)
        if tool_choice is not None:
            if not isinstance(tool_choice, (str, Mapping)):
                raise ValidationError(
                    f"chat model {self.name!r}: tool_choice must be 'auto', 'required', 'none' or "
                    f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}"
                )
            if not tools:
                raise ValidationError(f"chat model {self.name!r}: tool_choice needs tools to choose from")
            request["tool_choice"] = tool_choice if isinstance(tool_choice, str) else dict(tool_choice)
        if request:
            parameters = inspect.signature(self._agenerate).parameters
            takes_all = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
            missing = [key for key in request if key not in parameters and not takes_all]
            if missing:
                raise ValidationError(
                    f"chat model {self.name!r} ({type(self).__name__}) does not support {' or '.join(missing)}"
                )
        return request

    async def astream(self, input: Any, config: ConfigLike = None, *, tokens: bool = False) -> AsyncIterator[Any]:
        """Yield the reply's text deltas. `input`: messages, a str, or a Runnable input dict.

        With `tokens=True`, the events the model streams as the one step of a chain instead:
        `{"__token__": {"node": name, "text": delta}}` per delta, then `{name: output}` and
        `{"__end__": output}`, the output as `invoke` returns it (see `Runnable.astream`).
        """
        if tokens:
            if not isinstance(input, (str, Mapping)):
                input = {"messages": to_messages(input, where=f"{type(self).__name__}.stream")}
            async for event in super().astream(input, config, tokens=True):
                yield event
            return
        if isinstance(input, Mapping):
            messages = messages_from_state(input, where=f"{type(self).__name__}.stream")
        else:
            messages = to_messages(input, where=f"{type(self).__name__}.stream")
        ticket = None
        if current_budget() is not None:  # the run's usage limits hold for streams too
            ticket = before_request(*priced_as(self.config), messages, default_step=self.name)
        result: ChatResult | None = None
        try:
            with _telemetry.chat_call(self, messages, {}, attach=False) as call:  # not current: a generator
                async for item in self._astream(messages):
                    if isinstance(item, ChatResult):
                        result = item
                        call.chat_result(item)
                    elif item:
                        yield item
        except BaseException:  # failed, or the caller stopped reading: counted, not settled
            if ticket is not None:
                ticket.failed()
            raise
        if ticket is not None:
            if result is None:
                ticket.failed()
            else:
                ticket.settle(result.usage)

    def stream(self, input: Any, config: ConfigLike = None, *, tokens: bool = False) -> Iterator[Any]:
        """Sync `astream`."""
        return super().stream(input, config, tokens=tokens)

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

    def cache_key(self) -> str:
        """What this model is, for the cross-run cache: class, provider, model, parameters,
        base URL and a one-way digest of the API key (see `prefect_beluga.core.fingerprint`)."""
        return self._cache_key()

    def _cache_key(self, **extra: Any) -> str:
        """`cache_key()`'s value, with `extra` values (those not None) and, when set, the config's
        server preset, capability overrides and API version."""
        config = self.config
        options = extra.pop("options", config.options)
        values = {k: v for k, v in extra.items() if v is not None}
        if config.server is not None:
            values.setdefault("server", config.server)
        if config.capabilities:
            values["capabilities"] = config.capabilities
        if config.api_version is not None:
            values.setdefault("api_version", config.api_version)
        return key_of(
            f"{type(self).__module__}.{type(self).__qualname__}",
            provider=config.provider,
            model=config.model_name,
            base_url=config.base_url,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            options=options,
            api_key=secret_digest(config.resolved_api_key()),
            settings=public_settings(self, exclude=("config", "name", "capabilities", "server")),
            **values,
        )

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
