"""What a model call costs, for the models whose list price is known.

Prices are USD per million tokens (input, output), one table per provider: OpenAI's published
list prices as of 2026-11 (Azure OpenAI's global deployments are priced as OpenAI's models; an
Azure reply names the model its deployment serves, e.g. "gpt-4o-mini-2024-07-18", which is what
is priced), and the published list prices of Groq, Gemini and Anthropic for their common
models. Self-hosted servers (Ollama, vLLM, any "compatible" one) have no price table. A model
not listed has no estimate ("unpriced": None), never a guess and never zero. Dated snapshots
("gpt-4o-mini-2024-07-18", "claude-sonnet-4-5-20250929") are priced as their base model.

Examples:
    ```python
    from prefect_beluga.llms.pricing import estimate_cost
    from prefect_beluga.schema import Usage

    estimate_cost("gpt-4o-mini", Usage(prompt_tokens=1_000_000, completion_tokens=0))  # -> 0.15
    estimate_cost("llama-3.3-70b-versatile", {"prompt_tokens": 10**6}, provider="groq")  # -> 0.59
    estimate_cost("llama3.2", {"prompt_tokens": 10}, provider="ollama")  # -> None: unpriced
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

#: Price tables by provider or server preset name. Absent or empty: unpriced.
PRICES_BY_PROVIDER: dict[str, dict[str, tuple[float, float]]] = {
    "openai": PRICES_PER_MILLION,
    "azure_openai": PRICES_PER_MILLION,
    "offline": {"offline-extractive": (0.0, 0.0)},
    "groq": {
        "llama-3.3-70b-versatile": (0.59, 0.79),
        "llama-3.1-8b-instant": (0.05, 0.08),
    },
    "gemini": {
        "gemini-2.5-pro": (1.25, 10.00),
        "gemini-2.5-flash": (0.30, 2.50),
        "gemini-2.5-flash-lite": (0.10, 0.40),
    },
    "anthropic": {
        "claude-opus-4-1": (15.00, 75.00),
        "claude-sonnet-4-5": (3.00, 15.00),
        "claude-haiku-4-5": (1.00, 5.00),
    },
    "ollama": {},
    "vllm": {},
    "compatible": {},
}

_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


def price_of(model: str, provider: str | None = None) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for `model` or its dated snapshot, else None.

    With `provider` (a provider or server preset name), only that provider's table is read;
    without it, OpenAI's, then the others' (model names do not collide across them).
    """
    base = _SNAPSHOT.sub("", model)
    if provider is not None:
        table = PRICES_BY_PROVIDER.get(provider, {})
        return table.get(model) or table.get(base)
    for table in PRICES_BY_PROVIDER.values():
        price = table.get(model) or table.get(base)
        if price is not None:
            return price
    return None


def estimate_cost(model: str, usage: Usage | Mapping[str, Any], provider: str | None = None) -> float | None:
    """USD for one call's `usage` (a `Usage` or its dict), or None when `model`'s price is unknown."""
    price = price_of(model, provider)
    if price is None:
        return None
    usage = usage if isinstance(usage, Usage) else Usage(**usage)
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000


__all__ = ["PRICES_BY_PROVIDER", "PRICES_PER_MILLION", "estimate_cost", "price_of"]
