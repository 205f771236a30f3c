"""The configuration of a chat model (Beluga's `llms.NewConfig(WithProvider(...), ...)`)."""

from __future__ import annotations

import os
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from prefect_beluga._openai_client import OPENAI_API_KEY_ENV
from prefect_beluga.core.errors import ValidationError


def http_url(value: str | None) -> str | None:
    """`value` unchanged if it is None or an http(s) URL; else a ValueError (for field validators)."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return value


class Config(BaseModel):
    """Which chat model to use and how to call it.

    The API key is a `SecretStr`: it shows as `'**********'` in reprs, logs and Prefect
    parameters. Nothing is read from the environment except `OPENAI_API_KEY`, and only when
    `api_key` is None and the provider is "openai" (see `resolved_api_key`); in particular
    `OPENAI_BASE_URL` is not (the SDK itself still reads `OPENAI_ORG_ID` / `OPENAI_PROJECT_ID`).

    Args:
        provider: Provider name registered with `Factory` ("openai", "offline", or your own).
            May be left out when `Factory().create_provider(name, config)` names it.
        model_name: The model, e.g. "gpt-4o-mini".
        api_key: The provider's API key.
        base_url: API root of an OpenAI-compatible server (e.g. "http://127.0.0.1:8000/v1").
        temperature: Sampling temperature, 0 to 2 (provider default when None).
        max_tokens: Upper bound on the reply's tokens (provider default when None).
        timeout: Seconds one HTTP request may take.
        options: Further request parameters passed as they are (e.g. {"top_p": 0.9, "seed": 1}).
        rate_limit: Name of a rate limit (`prefect_beluga.limits.ensure_rate_limit`): every
            HTTP request, retries included, takes one of its slots first.

    Examples:
        ```python
        config = Config(provider="openai", model_name="gpt-4o-mini",
                        api_key=os.environ.get("OPENAI_API_KEY"), temperature=0.2)
        llm = Factory().create_provider("openai", config)
        Config(provider="offline")          # no key, no network
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

    @field_validator("options")
    @classmethod
    def _options_not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = {"model", "messages", "stream", "stream_options"} & set(value)
        if reserved:
            raise ValueError(f"{sorted(reserved)} are set by the model itself, not through options")
        return dict(value)

    def with_options(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated)."""
        return Config(**{**self.model_dump(), "api_key": self.api_key, **changes})

    def resolved_api_key(self) -> SecretStr | None:
        """`api_key`, or for provider "openai" the `OPENAI_API_KEY` environment variable."""
        if self.api_key is not None:
            return self.api_key
        if (self.provider or "openai") == "openai" and os.environ.get(OPENAI_API_KEY_ENV):
            return SecretStr(os.environ[OPENAI_API_KEY_ENV])
        return None


def _describe(exc: pydantic.ValidationError) -> str:
    """pydantic's errors as "field: message; ..." without echoing input values (keys!)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(p) for p in error.get("loc", ())) or "(config)"
        parts.append(f"{location}: {error.get('msg')}")
    return "; ".join(parts)


__all__ = ["Config"]
