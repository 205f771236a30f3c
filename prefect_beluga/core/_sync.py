"""Run a coroutine to completion from synchronous code."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from prefect.utilities.asyncutils import run_coro_as_sync

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` and return its result, from sync code or from inside a running loop.

    Uses Prefect's long-lived "run sync" event loop thread, so Prefect's async clients are
    reused across calls and a sync `invoke` works in notebooks and inside async code alike.
    """
    return run_coro_as_sync(coroutine)


__all__ = ["run_sync"]
