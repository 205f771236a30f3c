"""Rate limits on Prefect's global concurrency limits: create one, and take its slots (the `limiter` hook).

Public as `prefect_beluga.limits`, whose docstring shows how they are used.
"""

from __future__ import annotations

import math

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, rate_limit
from prefect.exceptions import ObjectNotFound

from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError


def _check(name: str, per_second: float, burst: int | None) -> int:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"ensure_rate_limit: name must be a non-empty str, got {name!r}")
    if isinstance(per_second, bool) or not isinstance(per_second, (int, float)) or not per_second > 0:
        raise ValidationError(f"ensure_rate_limit({name!r}): per_second must be > 0, got {per_second!r}")
    if burst is None:
        return max(1, math.ceil(per_second))
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValidationError(f"ensure_rate_limit({name!r}): burst must be an int >= 1, got {burst!r}")
    return burst


async def aensure_rate_limit(name: str, *, per_second: float, burst: int | None = None) -> None:
    """Create or update the Prefect global concurrency limit `name` as a rate limit.

    Args:
        name: The limit's name, given as `rate_limit=name` to chat models and embedders.
        per_second: Slots given back per second (Prefect's `slot_decay_per_second`).
        burst: Slots that may be taken at once (the limit's size); default `ceil(per_second)`.
    """
    slots = _check(name, per_second, burst)
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=name, limit=slots, slot_decay_per_second=float(per_second), active=True
                    )
                )
                return
            except ObjectNotFound:  # pragma: no cover - raced with another creator
                pass
        await client.update_global_concurrency_limit(
            name,
            GlobalConcurrencyLimitUpdate(limit=slots, slot_decay_per_second=float(per_second), active=True),
        )


def ensure_rate_limit(name: str, *, per_second: float, burst: int | None = None) -> None:
    """Sync `aensure_rate_limit`."""
    run_sync(aensure_rate_limit(name, per_second=per_second, burst=burst))


class PrefectLimiter:
    """Takes slots through Prefect's `rate_limit(name, strict=True)`."""

    async def acquire(self, name: str) -> None:
        try:
            await rate_limit(name, strict=True)
        except ConcurrencySlotAcquisitionError as exc:
            raise ValidationError(
                f"rate limit {name!r} does not exist on the Prefect API (or could not be taken): "
                f"create it first with prefect_beluga.limits.ensure_rate_limit({name!r}, "
                f"per_second=...) ({exc})"
            ) from None


__all__ = ["PrefectLimiter", "aensure_rate_limit", "ensure_rate_limit"]
