"""What a model call costs, for the models whose list price is known.

Prices are USD per million tokens (input, output), OpenAI's published list prices as of
2026-11; a model not listed has no estimate (None) rather than a guess. Dated snapshots
("gpt-4o-mini-2024-07-18") are priced as their base model.

Examples:
    ```python
    estimate_cost("gpt-4o-mini", Usage(prompt_tokens=1_000_000, completion_tokens=0))  # 0.15
    ```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prefect_beluga.schema import Usage

PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "offline-extractive": (0.0, 0.0),
}


_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for `model` or its dated snapshot, else None."""
    return PRICES_PER_MILLION.get(_SNAPSHOT.sub("", model))


def estimate_cost(model: str, usage: Usage | Mapping[str, Any]) -> float | None:
    """USD for one call's `usage` (a `Usage` or its dict), or None when `model`'s price is unknown."""
    price = price_of(model)
    if price is None:
        return None
    usage = usage if isinstance(usage, Usage) else Usage(**usage)
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000


__all__ = ["PRICES_PER_MILLION", "estimate_cost", "price_of"]
