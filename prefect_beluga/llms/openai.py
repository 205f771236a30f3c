"""OpenAI chat models (and any OpenAI-compatible server) through the official SDK.

```python
from prefect_beluga import Chain, llms
llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini"))   # key: OPENAI_API_KEY
llm.generate("What is Prefect?").content
Chain([llm], retries=3, retry_delay=[1, 5, 30]).invoke({"input": "What is Prefect?"})
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
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import SecretStr

from prefect_beluga._openai_client import ClientPerLoop, resolve_api_key
from prefect_beluga.core.errors import ProviderResponseError, ValidationError
from prefect_beluga.core.secrets import scrub
from prefect_beluga.llms.base import ChatModel
from prefect_beluga.llms.config import Config
from prefect_beluga.schema import AIMessage, AnyMessage, ChatResult, ToolCall, Usage
from prefect_beluga.tokens import count_message_tokens, count_tokens


class OpenAIChatModel(ChatModel):
    """A chat model served by OpenAI's chat completions API, or a compatible server.

    Args:
        config: Model name, key, `base_url`, temperature, max_tokens, timeout and extra
            request options. `api_key=None` reads `OPENAI_API_KEY`; with neither, a
            `ValidationError` names both (and the offline provider).
        **overrides: Config fields to change, e.g. `OpenAIChatModel(config, temperature=0)`.

    Examples:
        ```python
        llm = OpenAIChatModel(Config(model_name="gpt-4o-mini", api_key="sk-..."))
        llm = OpenAIChatModel(Config(model_name="llama3", base_url="http://127.0.0.1:8000/v1",
                                     api_key="unused"))   # an OpenAI-compatible server
        reply = await llm.agenerate([SystemMessage("Be brief."), HumanMessage("Hi")])
        async for delta in llm.astream("Tell me a story"):
            print(delta, end="")
        ```
    """

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        if config is None:
            config = Config(provider="openai", **overrides)
        elif not isinstance(config, Config):
            raise ValidationError(f"OpenAIChatModel expects an llms.Config, got {type(config).__name__}")
        elif overrides:
            config = config.with_options(**overrides)
        where = f"OpenAIChatModel({config.model_name!r})"
        self._api_key: SecretStr = resolve_api_key(config.api_key, where=where)
        self.config = config if config.provider else config.with_options(provider="openai")
        self._clients = ClientPerLoop(
            rate_limit=config.rate_limit,
            api_key=self._api_key.get_secret_value(),
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=0,  # retries belong to the Prefect retry policy of the step
        )

    def _request(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.config.model_name,
            "messages": [m.to_openai() for m in messages],
        }
        if tools:
            params["tools"] = tools
        if response_format is not None:
            params["response_format"] = response_format
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        if self.config.max_tokens is not None and "max_completion_tokens" not in self.config.options:
            params["max_tokens"] = self.config.max_tokens
        params.update(self.config.options)
        return params

    async def _call(self, **params: Any) -> Any:
        client = self._clients.get()
        try:
            return await client.chat.completions.create(**params)
        except json.JSONDecodeError as exc:
            raise ProviderResponseError(
                f"{self._where()}: the server's reply is not valid JSON ({exc.msg} at char {exc.pos})"
            ) from None
        except Exception as exc:
            scrub(exc, self._api_key)  # in place: the same exception, without the key
            raise

    def _where(self) -> str:
        server = self.config.base_url or "api.openai.com"
        return f"OpenAI chat model {self.config.model_name!r} at {server}"

    async def _agenerate(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatResult:
        params = self._request(messages, tools, response_format)
        response = await self._call(**params)
        choices = getattr(response, "choices", None)
        if not choices:
            raise ProviderResponseError(f"{self._where()}: the reply has no choices: {str(response)[:200]}")
        choice = choices[0]
        message = choice.message
        tool_calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
            for c in (message.tool_calls or ())
            if getattr(c, "function", None) is not None
        )
        content = message.content or ""
        usage = _usage(response.usage) or self._estimate(params["messages"], content)
        return ChatResult(
            message=AIMessage(content, tool_calls=tool_calls),
            usage=usage,
            model=response.model or self.config.model_name,
            finish_reason=choice.finish_reason,
        )

    async def _astream(
        self,
        messages: list[AnyMessage],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> AsyncIterator[str | ChatResult]:
        params = self._request(messages, tools, response_format)
        params.update(stream=True, stream_options={"include_usage": True})
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
                    if chunk.usage is not None:
                        usage = _usage(chunk.usage)
                    for choice in chunk.choices or ():
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                        for call in (choice.delta.tool_calls or ()) if choice.delta else ():
                            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                            entry["id"] = call.id or entry["id"]
                            if call.function is not None:
                                entry["name"] += call.function.name or ""
                                entry["arguments"] += call.function.arguments or ""
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
            scrub(exc, self._api_key)  # in place: the same exception, without the key
            raise
        content = "".join(parts)
        tool_calls = tuple(ToolCall(**calls[index]) for index in sorted(calls))
        yield ChatResult(
            message=AIMessage(content, tool_calls=tool_calls),
            usage=usage or self._estimate(params["messages"], content),
            model=model,
            finish_reason=finish_reason,
        )

    def _estimate(self, messages: list[dict[str, Any]], content: str) -> Usage:
        """Usage counted locally, for servers that do not report it."""
        prompt = count_message_tokens(messages, self.config.model_name)
        completion = count_tokens(content, self.config.model_name)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", 0) or 0
    completion = getattr(usage, "completion_tokens", 0) or 0
    total = getattr(usage, "total_tokens", 0) or prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


__all__ = ["OpenAIChatModel"]
