"""Process-wide hooks of the AI parts, found on first use, never installed by an import.

`core` names nothing of the package: the Prefect side of a hook (the sub-step runner that makes
task runs, the limiter that takes Prefect's global-concurrency slots) is declared as an entry
point of the group `prefect_beluga.hooks` in pyproject.toml and loaded the first time the hook
is needed (`core._substeps.substeps()`, `core._limits.get_limiter()`). Importing a module of the
package changes nothing; a hook set explicitly (`install_default`, `set_limiter`) wins.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

GROUP = "prefect_beluga.hooks"


def load_hook(name: str) -> Any | None:
    """The object the entry point `name` of `prefect_beluga.hooks` names, or None if none does."""
    for point in entry_points(group=GROUP, name=name):
        return point.load()
    return None


__all__ = ["GROUP", "load_hook"]
