"""Keeping API keys out of exceptions: what an SDK error carries is scrubbed before it travels.

An exception raised in a task may be logged, put in a Prefect state message, or pickled into
persisted results; a server (or a gateway) that quotes the key back must not put it there.

```python
from pydantic import SecretStr

from prefect_beluga.core.secrets import scrub

api_key = SecretStr("sk-not-a-real-key")


def call_the_sdk():
    raise RuntimeError("Incorrect API key provided: sk-not-a-real-key")


def ask():
    try:
        call_the_sdk()
    except Exception as exc:
        raise scrub(exc, api_key)


try:
    ask()
except RuntimeError as error:
    print(error)  # -> Incorrect API key provided: [redacted]
```
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr


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


__all__ = ["scrub"]
