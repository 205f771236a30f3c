"""Helpers of the Pinecone store that touch the SDK's shapes: vectors from its replies, and its
retry switch (a private SDK layout, reached only behind a guard with a fallback)."""

from __future__ import annotations

import dataclasses
import logging
import math
from array import array
from typing import Any

from prefect_beluga.core.errors import ValidationError

__all__ = ["describe", "set_sdk_retries", "values_of"]

logger = logging.getLogger("prefect_beluga.vectorstores.pinecone")


def values_of(vector: Any, id_: str) -> list[float]:
    """`vector` as a list of finite floats, else a `ValidationError` naming the id."""
    try:
        values = array("d", vector).tolist()  # converted in C: ~10x faster than float() per value
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(f"PineconeVectorStore: the vector for {id_!r} must be a list of numbers") from None
    # A NaN or infinity makes the sum non-finite; only then (or on overflow) look at each value.
    if not math.isfinite(sum(values)) and not all(math.isfinite(v) for v in values):
        raise ValidationError(f"PineconeVectorStore: the vector for {id_!r} contains NaN or infinity")
    return values


def describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a list of {'/'.join(kinds)}"
    if isinstance(value, float):
        return f"the non-finite number {value}"
    return f"a {type(value).__name__}"


def set_sdk_retries(index: Any, max_retries: int) -> bool:
    """Set how often the SDK retries a data-plane request by itself.

    pinecone 10's REST `Index` takes no retry setting (its retry policy is fixed at 3 retries,
    and `Pinecone(retry_config=...)` reaches only the control plane and gRPC), so the policy is
    replaced on the index's HTTP transport. Returns False, leaving the SDK's default, if the SDK's
    layout is not the one expected.
    """
    try:
        transport = index._http._client._transport
        config = transport._config
        transport._config = dataclasses.replace(config, max_retries=max_retries)
    except (AttributeError, TypeError, ValueError):
        logger.warning(
            "PineconeVectorStore: could not set the pinecone SDK's retries (SDK layout changed); "
            "the SDK's own retry policy applies in addition to the Prefect one"
        )
        return False
    return True

