"""What the OpenAI chat model, the OpenAI embedder and the OpenAI blocks share: key lookup, one
SDK client per event loop, and keeping the key out of errors. Private to the package."""

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


def resolve_api_key(api_key: SecretStr | str | None, *, where: str) -> SecretStr:
    """`api_key` as a SecretStr, else `$OPENAI_API_KEY`; a clear ValidationError if neither."""
    if isinstance(api_key, SecretStr):
        value = api_key.get_secret_value()
    else:
        value = api_key
    if value is None:
        value = os.environ.get(OPENAI_API_KEY_ENV)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{where}: api_key must be a str or SecretStr, got {type(value).__name__}")
    if not value or not value.strip():
        raise ValidationError(
            f"{where} needs an OpenAI API key: pass api_key=..., set the {OPENAI_API_KEY_ENV} "
            "environment variable, or load the configuration from its Prefect block "
            "(prefect_beluga.blocks). Without a key, use the offline provider (provider='offline')."
        )
    return SecretStr(value)


class ClientPerLoop:
    """One `openai.AsyncOpenAI` per event loop.

    An SDK client's connection pool belongs to the event loop it was first used on; Prefect
    tasks, `run_sync` and user code may each run on a different loop, so each gets its own.
    With `rate_limit`, every HTTP request the client sends first takes a slot of that rate
    limit (`prefect_beluga.core.limits.take_slot`; see `prefect_beluga.limits`).
    """

    def __init__(self, rate_limit: str | None = None, **client_options: Any) -> None:
        if client_options.get("base_url") is None:
            client_options["base_url"] = DEFAULT_BASE_URL
        self._options = client_options
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
                client = openai.AsyncOpenAI(**options)
                self._clients[loop] = client
            return client

    def __getstate__(self) -> dict[str, Any]:  # clients are not picklable; rebuild them
        return {"_options": self._options, "rate_limit": self.rate_limit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(rate_limit=state.get("rate_limit"), **state["_options"])


def _slot_taker(name: str) -> Any:
    """An httpx request hook taking one slot of the rate limit `name` before each request."""
    from prefect_beluga.core.limits import take_slot

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
    "DEFAULT_BASE_URL", "OPENAI_API_KEY_ENV", "ClientPerLoop", "check_rate_limit_name", "resolve_api_key",
]
