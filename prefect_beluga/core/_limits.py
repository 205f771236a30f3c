"""The rate-limit hook of the AI parts: a limiter protocol, filled in by `prefect_beluga.limits`.

A chat model or embedder configured with `rate_limit="openai"` calls `take_slot("openai")`
before each HTTP request. The AI parts never import Prefect: the limiter that talks to
Prefect's global concurrency limits (`prefect_beluga.limits.PrefectLimiter`) is found on first
use through the `limiter` hook (`core/_hooks.py`) when none is set; importing installs nothing.
"""

from __future__ import annotations

import threading
from typing import Protocol

from prefect_beluga.core._hooks import load_hook


class Limiter(Protocol):
    """Takes one slot of the rate limit `name`, waiting until one is free."""

    async def acquire(self, name: str) -> None: ...


_limiter: Limiter | None = None
_lock = threading.Lock()


def set_limiter(limiter: Limiter | None) -> Limiter | None:
    """Register the limiter `take_slot` uses; returns the previous one."""
    global _limiter
    with _lock:
        previous, _limiter = _limiter, limiter
    return previous


def get_limiter() -> Limiter:
    """The registered limiter (Prefect's, from `prefect_beluga.limits`, unless replaced)."""
    global _limiter
    with _lock:
        if _limiter is None:
            factory = load_hook("limiter")
            if factory is None:
                raise RuntimeError("no rate limiter: set one with set_limiter() (prefect_beluga.limits has Prefect's)")
            _limiter = factory()
        return _limiter


async def take_slot(name: str) -> None:
    """Wait for one slot of the rate limit `name` (before an HTTP request)."""
    await get_limiter().acquire(name)


__all__ = ["Limiter", "get_limiter", "set_limiter", "take_slot"]
