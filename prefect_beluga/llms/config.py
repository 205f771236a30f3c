"""The configuration of a chat model (Beluga's `llms.NewConfig(WithProvider(...), ...)`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from prefect_beluga._openai_client import AZURE_OPENAI_API_KEY_ENV, OPENAI_API_KEY_ENV
from prefect_beluga._openai_servers import PLACEHOLDER_KEY, check_overrides, server_preset
from prefect_beluga.core.errors import ValidationError


def http_url(value: str | None) -> str | None:
    """`value` unchanged if it is None or an http(s) URL; else a ValueError (for field validators)."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return value


class Config(BaseModel):
    """Which chat model to use and how to call it.

    The API key is a `SecretStr`: it shows as `'**********'` in reprs, logs and Prefect
    parameters. Nothing is read from the environment but the key, and only when `api_key` is
    None (see `resolved_api_key`): `OPENAI_API_KEY` for provider "openai", the preset's own
    variable for a `server` preset (`GROQ_API_KEY`, `GEMINI_API_KEY`, ...) and
    `AZURE_OPENAI_API_KEY` (plus `AZURE_OPENAI_ENDPOINT` and `OPENAI_API_VERSION` when those
    are not given) for "azure_openai"; in particular `OPENAI_BASE_URL` is not (the SDK itself
    still reads `OPENAI_ORG_ID` / `OPENAI_PROJECT_ID`).

    Args:
        provider: Provider name registered with `Factory` ("openai", "azure_openai", "offline",
            or your own). May be left out when `Factory().create_provider(name, config)` names it.
        model_name: The model, e.g. "gpt-4o-mini"; for "azure_openai", the deployment name.
        api_key: The provider's API key.
        base_url: API root of an OpenAI-compatible server (e.g. "http://127.0.0.1:8000/v1");
            for "azure_openai", the resource endpoint (e.g. "https://NAME.openai.azure.com").
        server: The OpenAI-compatible server preset ("openai", "ollama", "vllm", "groq",
            "gemini", "anthropic", "compatible"; see `llms.servers`): its usual base URL, its
            key variable and its declared capabilities. None: OpenAI itself.
        capabilities: Overrides of the preset's capabilities, e.g. `{"json_schema": False}`.
        api_version: Azure OpenAI API version, e.g. "2024-10-21" ("azure_openai" only).
        azure_ad_token_provider: A Microsoft Entra token provider (a callable returning a
            bearer token, sync or async), used instead of an API key ("azure_openai" only).
        temperature: Sampling temperature, 0 to 2 (provider default when None).
        max_tokens: Upper bound on the reply's tokens (provider default when None).
        timeout: Seconds one HTTP request may take.
        options: Further request parameters passed as they are (e.g. {"top_p": 0.9, "seed": 1}).
        rate_limit: Name of a rate limit (`prefect_beluga.limits.ensure_rate_limit`): every
            HTTP request, retries included, takes one of its slots first.

    Examples:
        ```python
        import os

        from prefect_beluga.llms import Config, Factory

        config = Config(provider="openai", model_name="gpt-4o-mini",
                        api_key=os.environ.get("OPENAI_API_KEY"), temperature=0.2)
        Config(provider="offline")          # no key, no network
        Config(provider="openai", server="ollama", model_name="llama3.2")   # localhost:11434
        Config(provider="azure_openai", model_name="my-gpt-4o-mini", base_url="https://NAME.openai.azure.com",
               api_version="2024-10-21", api_key=os.environ.get("AZURE_OPENAI_API_KEY"))
        ```

        The model of a config (a model needs its key when it is made):

        ```python
        # example: not run (needs OPENAI_API_KEY)
        llm = Factory().create_provider("openai", config)
        ```
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str | None = Field(default=None, description="Registered provider name, e.g. 'openai' or 'offline'.")
    model_name: str = Field(default="gpt-4o-mini", min_length=1, description="Model name, e.g. 'gpt-4o-mini'.")
    api_key: SecretStr | None = Field(default=None, description="API key; OPENAI_API_KEY is read when unset.")
    base_url: str | None = Field(default=None, description="API root of an OpenAI-compatible server.")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int | None = Field(default=None, gt=0, description="Maximum tokens in a reply.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds one request may take.")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra request parameters.")
    rate_limit: str | None = Field(
        default=None, min_length=1, description="Name of a Prefect rate limit taken per HTTP request."
    )
    server: str | None = Field(default=None, description="OpenAI-compatible server preset, e.g. 'ollama'.")
    capabilities: dict[str, bool] = Field(default_factory=dict, description="Overrides of the preset's capabilities.")
    api_version: str | None = Field(default=None, min_length=1, description="Azure OpenAI API version.")
    azure_ad_token_provider: Callable[[], Any] | None = Field(
        default=None, exclude=True, repr=False, description="Microsoft Entra token provider (Azure OpenAI)."
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"invalid llms.Config: {_describe(exc)}") from None

    @field_validator("provider")
    @classmethod
    def _provider_lower(cls, value: str | None) -> str | None:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _base_url_http(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("server")
    @classmethod
    def _known_server(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return server_preset(value, where="server").name
        except ValidationError as exc:
            raise ValueError(str(exc).removeprefix("server: ")) from None

    @field_validator("capabilities", mode="before")
    @classmethod
    def _known_capabilities(cls, value: Any) -> Any:
        try:
            return check_overrides(value if value is not None else {}, where="capabilities")
        except ValidationError as exc:
            raise ValueError(str(exc).removeprefix("capabilities: ")) from None

    @field_validator("options")
    @classmethod
    def _options_not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = {"model", "messages", "stream", "stream_options"} & set(value)
        if reserved:
            raise ValueError(f"{sorted(reserved)} are set by the model itself, not through options")
        return dict(value)

    def with_options(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated)."""
        return Config(**{
            **self.model_dump(), "api_key": self.api_key, "azure_ad_token_provider": self.azure_ad_token_provider,
            **changes,
        })

    def resolved_api_key(self) -> SecretStr | None:
        """`api_key`, else the key variable of the provider: `OPENAI_API_KEY` for "openai", the
        `server` preset's own (e.g. `GROQ_API_KEY`), `AZURE_OPENAI_API_KEY` for "azure_openai";
        a server that ignores keys (Ollama, vLLM, ...) gets a placeholder when none is set."""
        if self.api_key is not None:
            return self.api_key
        provider = self.provider or "openai"
        if provider == "azure_openai":
            value = os.environ.get(AZURE_OPENAI_API_KEY_ENV)
            return SecretStr(value) if value else None
        if provider != "openai":
            return None
        preset = server_preset(self.server)
        value = os.environ.get(preset.api_key_env or OPENAI_API_KEY_ENV)
        if value:
            return SecretStr(value)
        return None if preset.key_required else SecretStr(PLACEHOLDER_KEY)


def _describe(exc: pydantic.ValidationError) -> str:
    """pydantic's errors as "field: message; ..." without echoing input values (keys!)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(p) for p in error.get("loc", ())) or "(config)"
        parts.append(f"{location}: {error.get('msg')}")
    return "; ".join(parts)


__all__ = ["Config"]
