"""The rate-limit hook of the AI parts: a limiter protocol, filled in by `prefect_beluga.limits`.

A chat model or embedder configured with `rate_limit="openai"` calls `take_slot("openai")`
before each HTTP request. The AI parts never import Prefect: the limiter that talks to
Prefect's global concurrency limits is registered by `prefect_beluga.limits` (imported here on
first use when none is registered yet).
"""

from __future__ import annotations

import importlib
from typing import Protocol


class Limiter(Protocol):
    """Takes one slot of the rate limit `name`, waiting until one is free."""

    async def acquire(self, name: str) -> None: ...


_limiter: Limiter | None = None


def set_limiter(limiter: Limiter | None) -> Limiter | None:
    """Register the limiter `take_slot` uses; returns the previous one."""
    global _limiter
    previous, _limiter = _limiter, limiter
    return previous


def get_limiter() -> Limiter:
    """The registered limiter (Prefect's, from `prefect_beluga.limits`, unless replaced)."""
    if _limiter is None:
        importlib.import_module("prefect_beluga.limits")  # registers Prefect's limiter
    assert _limiter is not None
    return _limiter


async def take_slot(name: str) -> None:
    """Wait for one slot of the rate limit `name` (before an HTTP request)."""
    await get_limiter().acquire(name)


__all__ = ["Limiter", "get_limiter", "set_limiter", "take_slot"]
