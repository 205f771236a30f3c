"""Two input rules several parts of the package share: Prefect-safe names and JSON values.

Prefect refuses names holding ``/ % & < >`` (they end up in API paths and the UI's URLs), and
everything sent to the Prefect API as parameters, flow run inputs or signal payloads must be JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

from prefect_beluga.core.errors import ValidationError

__all__ = ["FORBIDDEN_NAME_CHARACTERS", "check_json", "check_name", "safe_name"]

FORBIDDEN_NAME_CHARACTERS = "/%&<>"
_FORBIDDEN = re.compile(r"[/%&<>]")


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
