"""OpenAI chat models (and any OpenAI-compatible server) through the official SDK.

```python
# example: not run (needs a real OPENAI_API_KEY and the network)
from prefect_beluga import Chain, llms

llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini"))   # key: OPENAI_API_KEY
llm.generate("What is Prefect?").content
Chain([llm], retries=3, retry_delay=[1, 5, 30]).invoke({"input": "What is Prefect?"})
llms.OpenAIChatModel(llms.Config(server="ollama", model_name="llama3.2"))   # a named server preset
```

The SDK's own retries are off (`max_retries=0`): a chain or graph step retries through its
Prefect retry policy, so attempts do not multiply and every attempt shows in the Prefect UI.
Errors are the SDK's exception types, which `prefect_beluga.core.retry.is_permanent` classifies:
`RateLimitError` (429), `InternalServerError` (5xx), `APIConnectionError` and `APITimeoutError`
are retried; `AuthenticationError` (401), `PermissionDeniedError` (403), `BadRequestError` (400)
and other 4xx are not. A 429's `Retry-After` stays readable on the exception
(`prefect_beluga.core.retry.retry_after_of`), and the step's retry policy waits at least that
long. A reply that is not valid JSON raises `ProviderResponseError` (retried). The API key is
removed from every error (message, body and the request headers it carries).

Servers (`llms.servers`): `Config(server=...)` names an OpenAI-compatible server preset, whose
declared capabilities decide the request: `parallel_tool_calls` is sent only where it is
honoured, `stream_options` (usage in streams) only where a stream reports usage (elsewhere the
usage is a tiktoken estimate, `usage.estimated=True`), and a `response_format`, `tool_choice`
or option (`seed`, ...) the preset does not support is a `ValidationError` before any request.
A 400 that names a parameter the server refused keeps the SDK's `BadRequestError` and gains a
note naming the parameter, where it came from (an option, or a capability) and the preset.
Finish reasons are normalised to OpenAI's spellings (`stop`, `length`, `tool_calls`,
`content_filter`), and streamed tool calls are assembled whether a server sends their
arguments in one chunk or many.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import SecretStr

from prefect_beluga._openai_client import ClientPerLoop, resolve_api_key, scrub_key
from prefect_beluga.core.errors import ProviderResponseError, ValidationError
from prefect_beluga.llms.base import ChatModel
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.servers import PLACEHOLDER_KEY, Capabilities, Server, server_preset
from prefect_beluga.schema import AIMessage, AnyMessage, ChatResult, ToolCall, Usage
from prefect_beluga.tokens import count_message_tokens, count_tokens

#: Other servers' spellings of OpenAI's finish reasons.
FINISH_REASONS = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "eos": "stop", "eos_token": "stop",
    "length": "length", "max_tokens": "length", "model_length": "length",
    "tool_calls": "tool_calls", "tool_use": "tool_calls", "function_call": "tool_calls", "tool_call": "tool_calls",
    "content_filter": "content_filter", "safety": "content_filter", "recitation": "content_filter",
}

#: Request parameters a capability decides on, and the capability.
_CAPABILITY_OF = {
    "parallel_tool_calls": "parallel_tool_calls",
    "stream_options": "stream_usage",
    "tool_choice": "tool_choice",
    "tools": "tools",
    "seed": "seed",
}


class OpenAIChatModel(ChatModel):
    """A chat model served by OpenAI's chat completions API, or a compatible server.

    Args:
        config: Model name, key, `base_url`, `server` preset, capability overrides,
            temperature, max_tokens, timeout and extra request options. `api_key=None` reads
            `OPENAI_API_KEY` (a preset's own variable with `server=`, e.g. `GROQ_API_KEY`);
            with neither, a `ValidationError` names both (and the offline provider). Servers
            that ignore keys (Ollama, vLLM, "compatible") get a placeholder.
        **overrides: Config fields to change, e.g. `OpenAIChatModel(config, temperature=0)`.

    Examples:
        ```python
        # example: not run (sends requests: needs real keys, a server on :8000, the network)
        from prefect_beluga.llms import Config, OpenAIChatModel
        from prefect_beluga.schema import HumanMessage, SystemMessage

        llm = OpenAIChatModel(Config(model_name="gpt-4o-mini", api_key="sk-..."))
        llm = OpenAIChatModel(Config(model_name="llama3", base_url="http://127.0.0.1:8000/v1",
                                     api_key="unused"))   # an OpenAI-compatible server
        llm = OpenAIChatModel(Config(server="groq", model_name="llama-3.3-70b-versatile"))
        reply = await llm.agenerate([SystemMessage("Be brief."), HumanMessage("Hi")])
        async for delta in llm.astream("Tell me a story"):
            print(delta, end="")
        ```
    """

    #: The provider name this class is registered under (`Config.provider`).
    provider_name = "openai"
    #: Requests go through the SDK's `chat.completions.create`: when the official OpenTelemetry
    #: OpenAI instrumentation is active, it makes the chat spans (core/_telemetry.py).
    _chat_via_openai_sdk = True

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        if config is None:
            config = Config(provider=self.provider_name, **overrides)
        elif not isinstance(config, Config):
            raise ValidationError(f"{type(self).__name__} expects an llms.Config, got {type(config).__name__}")
        elif overrides:
            config = config.with_options(**overrides)
        where = f"{type(self).__name__}({config.model_name!r})"
        self.config = config if config.provider else config.with_options(provider=self.provider_name)
        self.server: Server = self._server(where)
        self.capabilities: Capabilities = self.server.capabilities.with_overrides(
            config.capabilities, where=f"{where}: capabilities"
        )
        self._check_options(where)
        self._clients = self._make_clients(where)

    # -- construction (Azure overrides these) --------------------------------------------------

    def _server(self, where: str) -> Server:
        if self.config.server == "azure_openai":
            raise ValidationError(
                f"{where}: server='azure_openai' is a provider of its own: use "
                "llms.Config(provider='azure_openai', model_name=<deployment>, base_url=<endpoint>, api_version=...)"
            )
        return server_preset(self.config.server, where=where)

    def _make_clients(self, where: str) -> ClientPerLoop:
        server = self.server
        base_url = self.config.base_url or server.base_url
        if base_url is None:
            raise ValidationError(
                f"{where}: server preset {server.name!r} ({server.title}) has no usual address; "
                "pass base_url=... (e.g. 'http://127.0.0.1:8000/v1')"
            )
        self._api_key: SecretStr = resolve_api_key(
            self.config.api_key,
            where=where,
            env=server.api_key_env or "OPENAI_API_KEY",
            placeholder=None if server.key_required else PLACEHOLDER_KEY,
            title=server.title if server.name != "openai" else "OpenAI",
        )
        self._base_url = base_url
        return ClientPerLoop(
            rate_limit=self.config.rate_limit,
            api_key=self._api_key.get_secret_value(),
            base_url=base_url,
            timeout=self.config.timeout,
            max_retries=0,  # retries belong to the Prefect retry policy of the step
        )

    def _check_options(self, where: str) -> None:
        """Options the preset declares unsupported are refused before any request."""
        for option in self.config.options:
            capability = _CAPABILITY_OF.get(option)
            if capability is not None and not getattr(self.capabilities, capability):
                raise ValidationError(
                    f"{where}: option {option!r} is not supported by server preset {self.server.name!r} "
                    f"({self.server.title}: capability {capability}=False, see {self.server.docs[0]}); remove "
                    f"it, or declare it supported with capabilities={{{capability!r}: True}}"
                )

    # -- requests --------------------------------------------------------------------------------

    def _request(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self._check_request(tools, response_format, tool_choice)
        wire = [m.to_openai() for m in messages]
        if not self.capabilities.message_names:
            wire = [{k: v for k, v in m.items() if k != "name"} for m in wire]
        params: dict[str, Any] = {"model": self.config.model_name, "messages": wire}
        if tools:
            params["tools"] = tools
            if self.capabilities.parallel_tool_calls and "parallel_tool_calls" not in self.config.options:
                params["parallel_tool_calls"] = True
            if tool_choice is not None:
                params["tool_choice"] = tool_choice
        if response_format is not None:
            params["response_format"] = response_format
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        if self.config.max_tokens is not None and "max_completion_tokens" not in self.config.options:
            params["max_tokens"] = self.config.max_tokens
        params.update(self._extra_params())
        return params

    def _extra_params(self) -> dict[str, Any]:
        return dict(self.config.options)

    def _check_request(
        self,
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
        tool_choice: str | dict[str, Any] | None,
    ) -> None:
        caps = self.capabilities
        problem = None
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if tools and not caps.tools:
            problem = ("tools", "tools")
        elif tool_choice is not None and tools and not caps.tool_choice:
            problem = ("tool_choice", "tool_choice")
        elif kind == "json_schema" and not caps.json_schema:
            problem = ("response_format json_schema", "json_schema")
        elif kind == "json_schema" and tools and not caps.json_schema_with_tools:
            problem = ("response_format json_schema together with tools", "json_schema_with_tools")
        elif kind == "json_object" and not caps.json_object:
            problem = ("response_format json_object", "json_object")
        if problem is not None:
            what, capability = problem
            raise ValidationError(
                f"{self._where()}: {what} is not supported by server preset {self.server.name!r} "
                f"(capability {capability}=False, see {self.server.docs[0]}); an Agent's output_type falls back "
                f"by itself, or declare it supported with capabilities={{{capability!r}: True}}"
            )

    async def _call(self, **params: Any) -> Any:
        client = self._clients.get()
        try:
            return await client.chat.completions.create(**params)
        except json.JSONDecodeError as exc:
            raise ProviderResponseError(
                f"{self._where()}: the server's reply is not valid JSON ({exc.msg} at char {exc.pos})"
            ) from None
        except Exception as exc:
            scrub_key(exc, self._api_key)  # in place: the same exception, without the key
            self._explain_refusal(exc, params)
            raise

    def _explain_refusal(self, exc: BaseException, params: dict[str, Any]) -> None:
        """A 400 naming a parameter that was sent gets a note: the parameter, its origin, the preset."""
        if getattr(exc, "status_code", None) != 400:
            return
        named = getattr(exc, "param", None)
        message = str(getattr(exc, "message", "") or exc)
        sent = [key for key in params if key not in ("model", "messages", "stream")]
        field = None
        if isinstance(named, str) and named:
            field = next((key for key in sent if named == key or named.startswith((f"{key}.", f"{key}["))), named)
        else:
            field = next((key for key in sent if f"'{key}" in message or f'"{key}' in message
                          or f"`{key}" in message or f" {key} " in f" {message} "), None)
        if field is None:
            return
        if field not in params:
            origin = "it is part of the request body, not an option (the messages, or a rule of the server's own)"
        elif field in self.config.options:
            origin = (f"it came from llms.Config(options={{{field!r}: ...}}); remove that option for this server")
        elif field == "response_format":
            kind = (params.get("response_format") or {}).get("type")
            capability = "json_schema" if kind == "json_schema" else "json_object"
            origin = (f"it was sent because the preset declares {capability}=True; declare "
                      f"capabilities={{{capability!r}: False}} and an Agent's output_type falls back by itself")
        elif field in _CAPABILITY_OF:
            capability = _CAPABILITY_OF[field]
            origin = (f"it was sent because the preset declares {capability}=True; declare "
                      f"capabilities={{{capability!r}: False}}")
        else:
            origin = "it is a setting of the model itself (temperature, max_tokens, ...)"
        exc.add_note(
            f"{self._where()}: the server refused the request parameter {field!r} (HTTP 400: {message[:200]}); "
            f"{origin} (server preset {self.server.name!r}, {self.server.title})."
        )

    def _where(self) -> str:
        if self.server.name == "openai":
            server = self.config.base_url or "api.openai.com"
            return f"OpenAI chat model {self.config.model_name!r} at {server}"
        return (
            f"{self.server.title} chat model {self.config.model_name!r} at {self._base_url} "
            f"(server preset {self.server.name!r})"
        )

    async def _agenerate(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> ChatResult:
        params = self._request(messages, tools, response_format, tool_choice)
        response = await self._call(**params)
        choices = getattr(response, "choices", None)
        if not choices:
            raise ProviderResponseError(f"{self._where()}: the reply has no choices: {str(response)[:200]}")
        choice = choices[0]
        message = choice.message
        tool_calls = tuple(
            ToolCall(id=c.id or f"call_{index}", name=c.function.name, arguments=_arguments(c.function.arguments))
            for index, c in enumerate(message.tool_calls or ())
            if getattr(c, "function", None) is not None
        )
        content = message.content or ""
        usage = _usage(response.usage) or self._estimate(params["messages"], content, tool_calls)
        return ChatResult(
            message=AIMessage(content, tool_calls=tool_calls),
            usage=usage,
            model=response.model or self.config.model_name,
            finish_reason=normalise_finish_reason(choice.finish_reason, bool(tool_calls)),
        )

    async def _astream(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncIterator[str | ChatResult]:
        params = self._request(messages, tools, response_format, tool_choice)
        params["stream"] = True
        if self.capabilities.stream_usage:
            params["stream_options"] = {"include_usage": True}
        stream = await self._call(**params)
        parts: list[str] = []
        calls: dict[int, dict[str, str]] = {}  # streamed tool calls by index: id, name, arguments
        usage: Usage | None = None
        model = self.config.model_name
        finish_reason = None
        try:
            async with stream:
                async for chunk in stream:
                    model = chunk.model or model
                    if getattr(chunk, "usage", None) is not None:
                        usage = _usage(chunk.usage)
                    elif usage is None and isinstance(getattr(chunk, "x_groq", None), dict):
                        usage = _usage_dict(chunk.x_groq.get("usage"))  # Groq's own place for it
                    for choice in chunk.choices or ():
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                        for position, call in enumerate((choice.delta.tool_calls or ()) if choice.delta else ()):
                            index = call.index if isinstance(call.index, int) else len(calls) + position
                            entry = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
                            entry["id"] = call.id or entry["id"]
                            if call.function is not None:
                                name = call.function.name or ""
                                if name and name != entry["name"]:  # some servers repeat the name
                                    entry["name"] += name
                                entry["arguments"] += _arguments(call.function.arguments)
                        delta = choice.delta.content if choice.delta else None
                        if delta:
                            parts.append(delta)
                            yield delta
        except json.JSONDecodeError as exc:
            raise ProviderResponseError(
                f"{self._where()}: a streamed event is not valid JSON ({exc.msg})"
            ) from None
        except ProviderResponseError:
            raise
        except Exception as exc:
            scrub_key(exc, self._api_key)  # in place: the same exception, without the key
            raise
        content = "".join(parts)
        tool_calls = tuple(
            ToolCall(id=calls[index]["id"] or f"call_{n}", name=calls[index]["name"],
                     arguments=calls[index]["arguments"])
            for n, index in enumerate(sorted(calls))
        )
        yield ChatResult(
            message=AIMessage(content, tool_calls=tool_calls),
            usage=usage or self._estimate(params["messages"], content, tool_calls),
            model=model,
            finish_reason=normalise_finish_reason(finish_reason, bool(tool_calls)),
        )

    def _estimate(self, messages: list[dict[str, Any]], content: str, tool_calls: tuple[ToolCall, ...] = ()) -> Usage:
        """Usage counted locally (marked `estimated`), for servers that do not report it."""
        prompt = count_message_tokens(messages, self.config.model_name)
        completion = count_tokens(content, self.config.model_name) + sum(
            count_tokens(c.name + c.arguments, self.config.model_name) for c in tool_calls
        )
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     estimated=True)

    def cache_key(self) -> str:
        """See `ChatModel.cache_key`; the server preset and capability overrides count too."""
        return self._cache_key(server=self.server.name if self.server.name != "openai" else None)


def normalise_finish_reason(reason: str | None, has_tool_calls: bool) -> str | None:
    """OpenAI's spelling of a finish reason (`stop`, `length`, `tool_calls`, `content_filter`);
    a reply with tool calls that says it stopped finished with `tool_calls`."""
    if reason is None:
        return "tool_calls" if has_tool_calls else None
    normal = FINISH_REASONS.get(reason.strip().lower(), reason)
    if has_tool_calls and normal == "stop":
        return "tool_calls"
    return normal


def _arguments(arguments: Any) -> str:
    """Tool-call arguments as the JSON text OpenAI sends (some servers send an object)."""
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments)


def _usage_dict(usage: Any) -> Usage | None:
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=usage.get("total_tokens") or prompt + completion)


def _usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", 0) or 0
    completion = getattr(usage, "completion_tokens", 0) or 0
    total = getattr(usage, "total_tokens", 0) or prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


__all__ = ["FINISH_REASONS", "OpenAIChatModel", "normalise_finish_reason"]
