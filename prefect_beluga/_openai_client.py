"""What the OpenAI chat model, the OpenAI embedder and the OpenAI blocks share: key lookup, one
SDK client per event loop (`openai.AsyncOpenAI`, or `openai.AsyncAzureOpenAI` for Azure), and
keeping the key out of errors. Private to the package."""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

from pydantic import SecretStr

from prefect_beluga.core.errors import ValidationError

#: The environment variable read for the OpenAI API key when none is given.
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"

#: Used when no `base_url` is given (passed explicitly, so the SDK's OPENAI_BASE_URL is not read).
DEFAULT_BASE_URL = "https://api.openai.com/v1"

#: The environment variables read for Azure OpenAI when the configuration leaves them out (the
#: names the `openai` SDK and Azure's own documentation use).
AZURE_OPENAI_API_KEY_ENV = "AZURE_OPENAI_API_KEY"
AZURE_OPENAI_ENDPOINT_ENV = "AZURE_OPENAI_ENDPOINT"
AZURE_OPENAI_API_VERSION_ENVS = ("OPENAI_API_VERSION", "AZURE_OPENAI_API_VERSION")


def resolve_api_key(
    api_key: SecretStr | str | None,
    *,
    where: str,
    env: str = OPENAI_API_KEY_ENV,
    placeholder: str | None = None,
    title: str = "OpenAI",
) -> SecretStr:
    """`api_key` as a SecretStr, else `$env` (`OPENAI_API_KEY`), else `placeholder` (for servers
    that ignore keys); a clear ValidationError if none."""
    if isinstance(api_key, SecretStr):
        value = api_key.get_secret_value()
    else:
        value = api_key
    if value is None:
        value = os.environ.get(env) or placeholder
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{where}: api_key must be a str or SecretStr, got {type(value).__name__}")
    if not value or not value.strip():
        raise ValidationError(
            f"{where} needs {_article(title)} {title} API key: pass api_key=..., set the {env} "
            "environment variable, or load the configuration from its Prefect block "
            "(prefect_beluga.blocks). Without a key, use the offline provider (provider='offline')."
        )
    return SecretStr(value)


class ClientPerLoop:
    """One `openai.AsyncOpenAI` per event loop.

    An SDK client's connection pool belongs to the event loop it was first used on; Prefect
    tasks, `run_sync` and user code may each run on a different loop, so each gets its own.
    With `rate_limit`, every HTTP request the client sends first takes a slot of that rate
    limit (`prefect_beluga.core._limits.take_slot`; see `prefect_beluga.limits`).
    """

    def __init__(self, rate_limit: str | None = None, *, azure: bool = False, **client_options: Any) -> None:
        if not azure and client_options.get("base_url") is None:
            client_options["base_url"] = DEFAULT_BASE_URL
        self._options = client_options
        self.azure = azure
        self.rate_limit = rate_limit
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self) -> Any:
        import openai

        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                options = dict(self._options)
                if self.rate_limit is not None:
                    options["http_client"] = openai.DefaultAsyncHttpxClient(
                        event_hooks={"request": [_slot_taker(self.rate_limit)]}
                    )
                client = (openai.AsyncAzureOpenAI if self.azure else openai.AsyncOpenAI)(**options)
                self._clients[loop] = client
            return client

    def __getstate__(self) -> dict[str, Any]:  # clients are not picklable; rebuild them
        return {"_options": self._options, "rate_limit": self.rate_limit, "azure": self.azure}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(rate_limit=state.get("rate_limit"), azure=state.get("azure", False), **state["_options"])


def scrub_key(exc: BaseException, secret: SecretStr | None, _seen: set[int] | None = None) -> BaseException:
    """`core.secrets.scrub` (the key out of messages, bodies and the Authorization header), plus
    Azure's `api-key` request header masked; in place, through the linked exceptions too."""
    from prefect_beluga.core.secrets import scrub

    if secret is not None and _seen is None:
        scrub(exc, secret)
    seen = _seen if _seen is not None else set()
    seen.add(id(exc))
    for request in (getattr(exc, "request", None), getattr(getattr(exc, "response", None), "request", None)):
        headers = getattr(request, "headers", None)
        if headers is not None and "api-key" in headers:
            try:
                headers["api-key"] = "[redacted]"
            except Exception:  # immutable headers: the SDK masks them in reprs anyway
                pass
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None and id(linked) not in seen:
            scrub_key(linked, secret, seen)
    return exc


def azure_settings(
    *,
    endpoint: str | None,
    api_version: str | None,
    api_key: SecretStr | str | None,
    token_provider: Any,
    where: str,
    endpoint_argument: str = "base_url",
) -> tuple[str, str, SecretStr | None]:
    """Azure's endpoint, API version and key: given, else from the environment; a clear
    ValidationError naming each missing one (the endpoint by the caller's own argument name).
    The key may be None when a token provider is given."""
    endpoint = endpoint or os.environ.get(AZURE_OPENAI_ENDPOINT_ENV)
    if not endpoint:
        raise ValidationError(
            f"{where} needs the Azure OpenAI resource endpoint: pass "
            f"{endpoint_argument}='https://NAME.openai.azure.com' or set {AZURE_OPENAI_ENDPOINT_ENV}"
        )
    if not endpoint.startswith(("http://", "https://")):
        raise ValidationError(f"{where}: the Azure endpoint must start with http:// or https://, got {endpoint!r}")
    if api_version is None:
        api_version = next((os.environ[v] for v in AZURE_OPENAI_API_VERSION_ENVS if os.environ.get(v)), None)
    if not api_version or not isinstance(api_version, str):
        raise ValidationError(
            f"{where} needs an Azure OpenAI API version: pass api_version='2024-10-21' (or a later one) "
            f"or set {AZURE_OPENAI_API_VERSION_ENVS[0]}"
        )
    if token_provider is not None and not callable(token_provider):
        raise ValidationError(
            f"{where}: azure_ad_token_provider must be a callable returning a token, "
            f"got {type(token_provider).__name__}"
        )
    key: SecretStr | None = None
    if isinstance(api_key, SecretStr):
        api_key = api_key.get_secret_value()
    if api_key is not None and not isinstance(api_key, str):
        raise ValidationError(f"{where}: api_key must be a str or SecretStr, got {type(api_key).__name__}")
    if api_key is None and token_provider is None:
        api_key = os.environ.get(AZURE_OPENAI_API_KEY_ENV)
    if api_key:
        key = SecretStr(api_key)
    elif token_provider is None:
        raise ValidationError(
            f"{where} needs an Azure OpenAI credential: pass api_key=..., set {AZURE_OPENAI_API_KEY_ENV}, "
            "pass azure_ad_token_provider= (Microsoft Entra ID, e.g. azure.identity's "
            "get_bearer_token_provider), or load the configuration from its Prefect block "
            "(prefect_beluga.blocks.AzureOpenAICredentials)"
        )
    return endpoint.rstrip("/"), api_version, key


def _slot_taker(name: str) -> Any:
    """An httpx request hook taking one slot of the rate limit `name` before each request."""
    from prefect_beluga.core._limits import take_slot

    async def take(request: Any) -> None:
        await take_slot(name)

    return take


def check_rate_limit_name(value: Any, *, where: str) -> str | None:
    """`value` if it is None or a non-empty str; else a ValidationError naming `where`."""
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise ValidationError(
        f"{where}: rate_limit must be the name of a rate limit (see "
        f"prefect_beluga.limits.ensure_rate_limit), got {value!r}"
    )


__all__ = [
    "AZURE_OPENAI_API_KEY_ENV", "AZURE_OPENAI_API_VERSION_ENVS", "AZURE_OPENAI_ENDPOINT_ENV", "DEFAULT_BASE_URL",
    "OPENAI_API_KEY_ENV", "ClientPerLoop", "azure_settings", "check_rate_limit_name", "resolve_api_key", "scrub_key",
]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
