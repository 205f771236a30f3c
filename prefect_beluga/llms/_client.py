"""What the OpenAI chat model and the OpenAI embedder share: key lookup, one SDK client per
event loop, and keeping the key out of errors."""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

from pydantic import SecretStr

from prefect_beluga.core.errors import BelugaError, ValidationError

#: The environment variable read for the OpenAI API key when none is given.
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"

#: Used when no `base_url` is given (passed explicitly, so the SDK's OPENAI_BASE_URL is not read).
DEFAULT_BASE_URL = "https://api.openai.com/v1"


class ProviderResponseError(BelugaError):
    """A provider answered with something that is not a valid reply (malformed JSON, no
    choices, wrong number or size of embeddings). Not permanent: a retry may get a good reply."""


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
    """

    def __init__(self, **client_options: Any) -> None:
        if client_options.get("base_url") is None:
            client_options["base_url"] = DEFAULT_BASE_URL
        self._options = client_options
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self) -> Any:
        import openai

        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = openai.AsyncOpenAI(**self._options)
                self._clients[loop] = client
            return client

    def __getstate__(self) -> dict[str, Any]:  # clients are not picklable; rebuild them
        return {"_options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["_options"])


def scrub(exc: BaseException, secret: SecretStr, _seen: set[int] | None = None) -> BaseException:
    """Remove `secret` from `exc` (message, args, body) and from the request it carries.

    The SDK already masks the Authorization header in reprs; this also replaces its value, so
    an exception that is pickled or logged in full cannot leak the key, and removes the key
    from any server message that echoes it.
    """
    value = secret.get_secret_value()
    if not value:
        return exc
    mask = "[redacted]"

    def clean(obj: Any) -> Any:
        if isinstance(obj, str):
            return obj.replace(value, mask)
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return obj

    exc.args = tuple(clean(a) for a in exc.args)
    for attribute in ("message", "body"):
        if hasattr(exc, attribute):
            try:
                setattr(exc, attribute, clean(getattr(exc, attribute)))
            except AttributeError:
                pass
    requests = [getattr(exc, "request", None), getattr(getattr(exc, "response", None), "request", None)]
    for request in requests:
        headers = getattr(request, "headers", None)
        if headers is not None and "authorization" in headers:
            try:
                headers["authorization"] = f"Bearer {mask}"
            except Exception:  # immutable headers: the SDK masks them in reprs anyway
                pass
    # The raw bodies (httpx keeps them in `_content` / `_text`) are pickled with the exception
    # when Prefect persists a failed task's result: an echoed key must not survive there.
    for message in (getattr(exc, "response", None), *requests):
        for attribute in ("_content", "_text"):
            raw = getattr(message, attribute, None)
            if isinstance(raw, (bytes, str)):
                needle = value.encode() if isinstance(raw, bytes) else value
                if needle in raw:
                    setattr(message, attribute, raw.replace(needle, mask.encode() if isinstance(raw, bytes) else mask))
    seen = _seen if _seen is not None else set()
    seen.add(id(exc))
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None and id(linked) not in seen:
            scrub(linked, secret, seen)
    return exc


__all__ = ["DEFAULT_BASE_URL", "OPENAI_API_KEY_ENV", "ClientPerLoop", "ProviderResponseError", "resolve_api_key", "scrub"]
