"""The provider registry: `Factory().create_provider(name, config)` (Beluga's `NewFactory().CreateProvider`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from prefect_beluga.core.errors import ValidationError
from prefect_beluga.llms.azure import AzureOpenAIChatModel
from prefect_beluga.llms.base import ChatModel
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.offline import OfflineChatModel
from prefect_beluga.llms.openai import OpenAIChatModel

ProviderBuilder = Callable[[Config], ChatModel]


def _openai(config: Config) -> ChatModel:
    return OpenAIChatModel(config)


def _azure_openai(config: Config) -> ChatModel:
    return AzureOpenAIChatModel(config)


def _offline(config: Config) -> ChatModel:
    return OfflineChatModel(config)


class Factory:
    """Builds chat models by provider name, from a registry you can add providers to.

    Built in: "openai" (`OpenAIChatModel`, also for OpenAI-compatible servers via `base_url`
    and a `server` preset: Ollama, vLLM, Groq, Gemini, Anthropic, any "compatible" one),
    "azure_openai" (`AzureOpenAIChatModel`) and "offline" (`OfflineChatModel`). The registry
    is shared by every Factory.

    Examples:
        ```python
        from prefect_beluga.llms import ChatModel, Config, Factory
        from prefect_beluga.schema import AIMessage, ChatResult

        config = Config(provider="openai", model_name="gpt-4o-mini", api_key="sk-...")
        llm = Factory().create_provider("openai", config)  # made offline; requests need a real key


        class EchoModel(ChatModel):
            def __init__(self, config):
                self.config = config

            async def _agenerate(self, messages):
                return ChatResult(message=AIMessage(messages[-1].content), model=self.config.model_name)


        Factory.register("echo", lambda config: EchoModel(config))   # your own provider
        Factory().create_provider("echo", Config(model_name="echo-1")).generate("hi").content  # -> 'hi'
        Factory.providers()  # -> ['azure_openai', 'echo', 'offline', 'openai']
        Factory.unregister("echo")
        ```
    """

    _registry: ClassVar[dict[str, ProviderBuilder]] = {
        "openai": _openai, "azure_openai": _azure_openai, "offline": _offline,
    }
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def register(cls, name: str, builder: ProviderBuilder, *, replace: bool = False) -> None:
        """Add provider `name`, built by `builder(config) -> ChatModel`.

        Raises:
            ValidationError: `name` is already registered (pass `replace=True` to override).
        """
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"a provider name must be a non-empty str, got {name!r}")
        if not callable(builder):
            raise ValidationError(f"the builder of provider {name!r} must be callable, got {builder!r}")
        key = name.strip().lower()
        with cls._lock:
            if key in cls._registry and not replace:
                raise ValidationError(f"provider {key!r} is already registered; pass replace=True to override it")
            cls._registry[key] = builder

    @classmethod
    def unregister(cls, name: str) -> None:
        """Remove provider `name` (built-in providers too)."""
        with cls._lock:
            cls._registry.pop(name.strip().lower(), None)

    @classmethod
    def providers(cls) -> list[str]:
        """The registered provider names, sorted."""
        with cls._lock:
            return sorted(cls._registry)

    def create_provider(self, name: str | None = None, config: Config | None = None) -> ChatModel:
        """The chat model of provider `name` (default: `config.provider`, else "openai").

        Raises:
            ValidationError: unknown provider (the message lists the known ones), `name` and
                `config.provider` disagree, or the provider rejects the config (e.g. no API key).
        """
        if config is None:
            config = Config(provider=name)
        elif not isinstance(config, Config):
            raise ValidationError(f"create_provider expects an llms.Config, got {type(config).__name__}")
        if name is not None and not isinstance(name, str):
            raise ValidationError(f"the provider name must be a str, got {type(name).__name__}")
        key = (name or config.provider or "openai").strip().lower()
        if config.provider is not None and config.provider != key:
            raise ValidationError(
                f"create_provider({key!r}, config) but config.provider is {config.provider!r}; "
                "make them agree or leave one out"
            )
        with self._lock:
            builder = self._registry.get(key)
        if builder is None:
            raise ValidationError(f"unknown LLM provider {key!r}; known providers: {', '.join(self.providers())}")
        if config.provider is None:
            config = config.with_options(provider=key)
        model = builder(config)
        if not isinstance(model, ChatModel):
            raise ValidationError(
                f"the builder of provider {key!r} returned {type(model).__name__}, not a ChatModel"
            )
        return model


def create_provider(name: str | None = None, config: Config | None = None) -> ChatModel:
    """Shortcut for `Factory().create_provider(name, config)`."""
    return Factory().create_provider(name, config)


__all__ = ["Factory", "ProviderBuilder", "create_provider"]
