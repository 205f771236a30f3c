"""JSON for the wire: any result as JSON values, and text scrubbed of secrets before it leaves."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from pydantic_core import to_jsonable_python

# `scheme://user:password@host`: the credentials part of a URL.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
# Environment variables whose values never leave the server.
SECRET_ENV = ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "OPENAI_API_KEY", "PINECONE_API_KEY")


def _fallback(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return repr(value)


def jsonable(value: Any) -> Any:
    """`value` as JSON values (pydantic models dumped, other objects by `to_dict()` or repr)."""
    return to_jsonable_python(value, fallback=_fallback)


class Scrubber:
    """Removes secrets from text bound for a client or a log: the app's token, the Prefect API's
    credentials and the keys in the server's environment, and any `user:password@` of a URL."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values = [*secrets, *(os.environ.get(name) for name in SECRET_ENV)]
        self._secrets = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", text)
