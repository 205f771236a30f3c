"""How input and step outputs become the state a step receives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect_beluga.core.errors import StepOutputError, ValidationError


def coerce_input(input: Any, *, where: str) -> dict[str, Any]:
    """Return the state a run starts from: a copy of a dict, or `{"input": s}` for a string."""
    if isinstance(input, str):
        return {"input": input}
    if isinstance(input, Mapping):
        return dict(input)
    raise ValidationError(
        f"{where} expects a dict (or a str, read as {{'input': ...}}) as input, "
        f"got {type(input).__name__}"
    )


def check_output(output: Any, *, where: str) -> dict[str, Any]:
    """Return a step's output, or raise `StepOutputError` if it is not a dict."""
    if isinstance(output, Mapping):
        return dict(output)
    raise StepOutputError(
        f"{where} returned {type(output).__name__}, expected a dict of state updates"
    )


def merge(state: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """The state after a step: the previous state updated with the step's output."""
    return {**state, **update}


__all__ = ["check_output", "coerce_input", "merge"]
