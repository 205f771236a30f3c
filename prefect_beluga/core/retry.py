"""Which errors are worth retrying."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from prefect_beluga.core.errors import UsageLimitExceeded, ValidationError

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]

# 4xx replies that say "try again": request timeout, conflict, rate limited.
_RETRYABLE_4XX = frozenset({408, 409, 429})


def status_code_of(exc: BaseException) -> int | None:
    """The HTTP status an SDK error carries, if any (openai: `status_code`; pinecone: `status`)."""
    for attribute in ("status_code", "status"):
        value = getattr(exc, attribute, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def is_permanent(exc: BaseException) -> bool:
    """True for errors a retry cannot fix.

    Those are this package's validation errors and exceeded usage limits, authentication and permission errors,
    4xx replies other than 408, 409 and 429, and any exception that says so itself with a false
    `retryable` attribute (an MCP server's answer that a tool call failed: asking again gets the
    same answer). Everything else (timeouts, connection errors, 5xx, rate limits, exceptions from
    user code) is considered transient.
    """
    if isinstance(exc, (ValidationError, UsageLimitExceeded, PermissionError)):
        return True
    if getattr(exc, "retryable", True) is False:
        return True
    name = type(exc).__name__
    if "Authentication" in name or "Unauthorized" in name or "Forbidden" in name:
        return True
    status = status_code_of(exc)
    return status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX


def should_retry(exc: BaseException, retry_on: RetryOn | None = None) -> bool:
    """Whether `exc` deserves another attempt under the `retry_on` setting.

    `retry_on` may be an exception type, a tuple of them, or a predicate; it replaces the
    default (`not is_permanent(exc)`), so it can narrow or widen what is retried.
    """
    if retry_on is None:
        return not is_permanent(exc)
    if isinstance(retry_on, type) or isinstance(retry_on, tuple):
        return isinstance(exc, retry_on)
    return bool(retry_on(exc))


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (`Retry-After` / `retry-after-ms`), if it said.

    Reads the headers of the HTTP response an SDK error carries (openai: `exc.response`,
    pinecone: `exc.headers`); accepts delta-seconds and HTTP dates.
    """
    response = getattr(exc, "response", None)
    headers: Any = getattr(response, "headers", None) or getattr(exc, "headers", None)
    if not isinstance(headers, Mapping) and not hasattr(headers, "get"):
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


__all__ = ["RetryOn", "is_permanent", "retry_after_of", "should_retry", "status_code_of"]
