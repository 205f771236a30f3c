"""The package's argument checks: integers that are not bools, numbers in a range, flags, names
and JSON values — written once, so every constructor says the same thing the same way.

Each check returns the value it accepted (so a constructor reads ``self.k = check_int(k, ...)``) or
raises a `ValidationError` whose message names the argument as the caller spelled it in ``what``
(``"graph 'g': recursion_limit"``), what was expected, and what came instead.

Examples:
    ```python
    from prefect_beluga.core._checks import check_int, check_number

    k = check_int(3, "WindowMemory: k", low=1)                      # 3
    timeout = check_number(None, "MCPServer: timeout", none=True, seconds=True)  # None
    ```

    ``check_int(True, "WindowMemory: k", low=1)`` raises ``ValidationError("WindowMemory: k must
    be an int >= 1, got True")``.

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds and ``True < 1`` is
false: a hand-written ``isinstance(x, int) and x >= 1`` accepts ``True`` as 1. These checks never
do. Names follow Prefect's rules (it refuses ``/ % & < >``: they end up in API paths and the UI's
URLs); everything sent to the Prefect API as parameters, flow run inputs or signal payloads must be
JSON. Depends on nothing of ours but the errors module.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from typing import Any

from prefect_beluga.core.errors import ValidationError

__all__ = [
    "FORBIDDEN_NAME_CHARACTERS",
    "check_bool",
    "check_int",
    "check_json",
    "check_name",
    "check_number",
    "is_int",
    "is_number",
    "safe_name",
]

FORBIDDEN_NAME_CHARACTERS = "/%&<>"
_FORBIDDEN = re.compile(r"[/%&<>]")


def is_int(value: Any) -> bool:
    """Whether `value` is an integer and not a bool (``True`` is an ``int`` to Python, not to us)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether `value` is a finite real number and not a bool (``nan`` and ``inf`` are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_int(
    value: Any, what: str, *, low: int = 0, high: int | None = None, none: bool = False, why: str = ""
) -> Any:
    """`value` if it is an int (not a bool) from `low` to `high` (or None, when `none`).

    Else a `ValidationError`: ``"{what} must be an int >= {low}[ or None]{why}, got {value!r}"``
    (``from {low} to {high}`` when there is a `high`). `why` is appended as given, e.g.
    ``" (Pinecone's limit per upsert)"``.
    """
    if value is None and none:
        return None
    if is_int(value) and value >= low and (high is None or value <= high):
        return value
    limit = f"from {low} to {high}" if high is not None else f">= {low}"
    raise ValidationError(f"{what} must be an int {limit}{' or None' if none else ''}{why}, got {value!r}")


def check_number(
    value: Any,
    what: str,
    *,
    low: float = 0,
    strict: bool = True,
    none: bool = False,
    seconds: bool = False,
    why: str = "",
) -> Any:
    """`value` if it is a finite real number (not a bool) above `low` (at least `low` unless `strict`).

    Else a `ValidationError`: ``"{what} must be a number > 0[ or None]{why}, got {value!r}"``, or
    ``"... must be > 0 seconds ..."`` for a duration (`seconds`).
    """
    if value is None and none:
        return None
    if is_number(value) and (value > low if strict else value >= low):
        return value
    bound = f"{'>' if strict else '>='} {int(low) if float(low).is_integer() else low}"
    expected = f"{bound} seconds" if seconds else f"a number {bound}"
    raise ValidationError(f"{what} must be {expected}{' or None' if none else ''}{why}, got {value!r}")


def check_bool(value: Any, what: str) -> bool:
    """`value` if it is ``True`` or ``False`` (not 1, 0 or ``"yes"``); else a `ValidationError` naming `what`."""
    if isinstance(value, bool):
        return value
    raise ValidationError(f"{what} must be True or False, got {value!r}")


def check_name(value: Any, what: str, *, spaces: bool = True) -> str:
    """`value` if it is a non-empty name Prefect accepts; else a `ValidationError` naming `what`."""
    ok = isinstance(value, str) and value.strip() and not _FORBIDDEN.search(value)
    if ok and not spaces and " " in value:
        ok = False
    if not ok:
        extra = "spaces or " if not spaces else ""
        raise ValidationError(f"{what} must be a non-empty string without {extra}/ % & < >, got {value!r}")
    return value


def safe_name(name: str, default: str = "runnable") -> str:
    """`name` with the characters Prefect refuses replaced by ``-``."""
    return _FORBIDDEN.sub("-", name) or default


def check_json(value: Any, what: str, why: str = "") -> str:
    """`value` as JSON text; else a `ValidationError` naming `what` (and the bad key of a dict)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        where = ""
        if isinstance(value, dict):
            bad = next((k for k, v in value.items() if not _json_ok(v)), None)
            if bad is not None:
                where = f" (key {bad!r} holds a {type(value[bad]).__name__})"
        raise ValidationError(f"{what} must be JSON-serialisable{why}{where}: {exc}") from None


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
