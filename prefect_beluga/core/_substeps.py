"""Sub-steps: how a Runnable asks for parts of its own work to run as observable steps.

An agent is one step of a chain (or a graph node, or a workflow body), yet each of its model
calls and tool calls should show as a step of its own, with its own retries, timeout and
state. The agent cannot make Prefect tasks itself: only `prefect_beluga.orchestration` knows
how work becomes a Prefect task. So it asks through this hook:

    ```python
    from prefect_beluga.core._substeps import Substep, substeps


    async def search(query: str) -> str:
        return f"docs about {query}"


    result = await substeps().run(Substep("search_docs", retries=2, timeout=10), search, "retries")
    result  # -> 'docs about retries'
    ```

`substeps()` returns the current `SubstepRunner`. The Prefect one is found on first use (the
`substeps` hook, see `core/_hooks.py`; importing a module installs nothing): inside a flow run each sub-step is a task
run named after it, with the retry policy and timeout as the task's; inside a workflow run its
result is durable like any step's. A caller may also scope a runner of its own with
`use_substeps(runner)` (a context variable). Without any, `InlineSubsteps` runs the work
directly, with the same retries and timeout, so the AI parts work without Prefect.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from prefect_beluga.core._checks import check_int, check_number
from prefect_beluga.core._hooks import load_hook
from prefect_beluga.core.config import RunConfig
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.retry import should_retry

T = TypeVar("T")


@dataclass(frozen=True)
class Substep:
    """What a sub-step is called and how it is retried.

    Args:
        name: The step's name (the Prefect task run's name).
        retries: Extra attempts after the first (permanent errors are not retried).
        retry_delay: Seconds between attempts.
        timeout: Seconds one attempt may take.
        cache_key: For a sub-step whose result depends only on its arguments (a model call, not
            a tool with side effects): a function returning what the work is (e.g. the chat
            model's `cache_key`). Inside a step cached across runs (`cache=True`), such a
            sub-step is cached by value too: this key plus the canonical JSON of its arguments.
            None (the default): never cached.
    """

    name: str
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    cache_key: Callable[[], str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValidationError(f"a sub-step needs a non-empty name, got {self.name!r}")
        check_int(self.retries, f"sub-step {self.name!r}: retries")
        check_number(self.retry_delay, f"sub-step {self.name!r}: retry_delay", strict=False, seconds=True)
        check_number(self.timeout, f"sub-step {self.name!r}: timeout", none=True, seconds=True)
        if self.cache_key is not None and not callable(self.cache_key):
            raise ValidationError(f"sub-step {self.name!r}: cache_key must be a function returning a str")


@runtime_checkable
class SubstepRunner(Protocol):
    """Runs sub-steps; `prefect_beluga.orchestration` provides the Prefect one."""

    async def run(self, step: Substep, fn: Callable[..., Awaitable[T]], /, *args: Any) -> T:
        """`await fn(*args)` as the sub-step `step`. `fn` must be long-lived (e.g. a bound
        method of a tool); `args` plain data (they may be hashed and persisted)."""
        ...

    async def root(
        self, owner: object, name: str, fn: Callable[[Any], Awaitable[T]], input: Any, config: RunConfig | None = None
    ) -> T:
        """`await fn(input)` as a run of its own named `name` (run name and tags from `config`),
        when not inside one already."""
        ...

    def in_workflow(self) -> bool:
        """Whether this code runs inside a workflow run (durable, able to wait for signals)."""
        ...

    async def wait_for_signal(self, name: str) -> Any:
        """Wait for the signal `name` sent to the current workflow run; return its payload."""
        ...


class InlineSubsteps:
    """Runs sub-steps directly in this process: retries and timeout kept, nothing recorded."""

    async def run(self, step: Substep, fn: Callable[..., Awaitable[T]], /, *args: Any) -> T:
        attempt = 0
        while True:
            try:
                if step.timeout is None:
                    return await fn(*args)
                return await asyncio.wait_for(fn(*args), step.timeout)
            except Exception as exc:
                if attempt >= step.retries or not should_retry(exc):
                    raise
                attempt += 1
                if step.retry_delay:
                    await asyncio.sleep(step.retry_delay)

    async def root(
        self, owner: object, name: str, fn: Callable[[Any], Awaitable[T]], input: Any, config: RunConfig | None = None
    ) -> T:
        return await fn(input)

    def in_workflow(self) -> bool:
        return False

    async def wait_for_signal(self, name: str) -> Any:
        raise ValidationError(f"waiting for the signal {name!r} needs a workflow run")


_default: SubstepRunner | None = None  # found on first use (the `substeps` hook)
_default_lock = threading.Lock()
_current: ContextVar[SubstepRunner | None] = ContextVar("prefect_beluga_substeps", default=None)


def substeps() -> SubstepRunner:
    """The runner sub-steps go to here: a scoped one, else the installed default."""
    return _current.get() or _default or _first_default()


def _first_default() -> SubstepRunner:
    """The default on first use: the `substeps` hook (Prefect's task runs), else inline."""
    global _default
    with _default_lock:
        if _default is None:
            _default = load_hook("substeps") or InlineSubsteps()
        return _default


def install_default(runner: SubstepRunner) -> None:
    """Make `runner` the default for this process (instead of the `substeps` hook)."""
    global _default
    if not isinstance(runner, SubstepRunner):
        raise ValidationError(f"expected a SubstepRunner, got {type(runner).__name__}")
    _default = runner


@contextmanager
def use_substeps(runner: SubstepRunner) -> Iterator[SubstepRunner]:
    """Run sub-steps started within the block with `runner`."""
    token = _current.set(runner)
    try:
        yield runner
    finally:
        _current.reset(token)


__all__ = ["InlineSubsteps", "Substep", "SubstepRunner", "install_default", "substeps", "use_substeps"]
