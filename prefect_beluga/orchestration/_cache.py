"""The cross-run cache: Prefect task caching keyed by values (see docs/cache.md).

A cached step's task gets `StepValueKey` as its cache policy and a persisted result. The key is a
sha256 of: the key format version, the chain/graph name, the step name, the step's fingerprint
(`prefect_beluga.core.fingerprint.fingerprint`: its `cache_key()`, or its class, source and held
values) and the canonical JSON of the step's input state. No API key enters it except as a
sha256 digest inside the fingerprint, itself hashed again here: the stored record (named by the
key) holds no secret unless the step's own output does.

Prefect then does the rest: before running, it looks the key up in the task's result storage
(`PREFECT_LOCAL_STORAGE_PATH`, the server's default result storage block, or the `cache_storage`
given); a record that exists and has not expired is returned as the task's result and the task
run ends in the `Cached` state, without running the step. Any process sharing that storage
shares the cache.

Sub-steps (an agent's model turns) that declare a `cache_key` are cached the same way while the
step running them is cached (`active_cache`, set around a step's run by `_tasks.py`): keyed by
that `cache_key()` and the canonical JSON of their arguments (`SubstepValueKey`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.annotations import quote

from prefect_beluga.core.errors import UncacheableInputWarning, ValidationError
from prefect_beluga.core.fingerprint import FORMAT_VERSION, NoCanonicalForm, canonical_json, fingerprint, sha256

logger = logging.getLogger("prefect_beluga.cache")

KEY_PREFIX = "beluga-cache-"


@dataclass(frozen=True)
class CacheSettings:
    """How one step is cached: `scope` (e.g. "chain 'rag'"), expiration and result storage."""

    scope: str
    expiration: timedelta | None = None
    storage: Any = None  # a Prefect WritableFileSystem block (or its slug); None: Prefect's default

    def __post_init__(self) -> None:
        if self.expiration is not None and (
            not isinstance(self.expiration, timedelta) or self.expiration <= timedelta(0)
        ):
            raise ValidationError(
                f"{self.scope}: cache_expiration must be a positive datetime.timedelta or None, "
                f"got {self.expiration!r}"
            )


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@dataclass
class StepValueKey(CachePolicy):
    """Cache key from values only: scope, step name, step fingerprint, canonical input JSON.

    The step's fingerprint is recomputed on every call (a held model's settings may change
    between calls); an input without canonical JSON gives no key (the step runs uncached) and
    one `UncacheableInputWarning` per step and process.
    """

    scope: str = ""
    step: str = ""
    runnable: Any = field(default=None, repr=False, compare=False)

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return step_cache_key(self.scope, self.step, self.runnable, unquoted((inputs or {}).get("state")))


def unquoted(value: Any) -> Any:
    """`value` without Prefect's `quote` wrapper, in which steps pass their inputs to tasks."""
    return value.unquote() if isinstance(value, quote) else value


def step_cache_key(scope: str, step: str, runnable: Any, state: Any) -> str | None:
    """The cache key of `runnable` (named `step` in `scope`) on input `state`, or None (warned)."""
    return value_key(scope, step, lambda: fingerprint(runnable), state)


def value_key(scope: str, step: str, identity: Callable[[], str], state: Any) -> str | None:
    """`KEY_PREFIX` + a sha256 of the format version, `scope`, `step`, `identity()` (what the
    work is) and the canonical JSON of `state`; None (warned once) when `state` has none."""
    try:
        body = canonical_json(state)
    except NoCanonicalForm as exc:
        _warn_once(scope, step, str(exc))
        return None
    identity_text = identity()
    if not isinstance(identity_text, str):
        raise TypeError(f"the cache key of {step!r} must be a str, got {type(identity_text).__name__}")
    parts = (FORMAT_VERSION, scope, step, identity_text, sha256(body))
    return KEY_PREFIX + sha256("\x1f".join(parts))


SUBSTEP_SCOPE = "sub-steps"

# The cache settings of the step running now, when that step is cached (else None): sub-steps
# with a `cache_key` started inside it are cached by value with these settings.
active_cache: ContextVar[CacheSettings | None] = ContextVar("prefect_beluga_active_cache", default=None)


@dataclass
class SubstepValueKey(CachePolicy):
    """Cache key of a pure sub-step (a model turn): its `cache_key()` and its arguments' JSON."""

    step: Any = field(default=None, compare=False)  # a core._substeps.Substep with a cache_key

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return value_key(SUBSTEP_SCOPE, self.step.name, self.step.cache_key, unquoted((inputs or {}).get("args")))


def _warn_once(scope: str, step: str, reason: str) -> None:
    with _warned_lock:
        if (scope, step) in _warned:
            return
        _warned.add((scope, step))
    message = (
        f"step {step!r} of {scope}: its input has no canonical JSON form ({reason}), so it runs "
        f"without the cross-run cache; pass JSON-able values (str, numbers, lists, dicts with str "
        f"keys, pydantic models) to cache it"
    )
    warnings.warn(message, UncacheableInputWarning, stacklevel=2)
    logger.warning(message)


# Where `cache_hits()` collects the cached steps that finished while it is open.
_recorder: ContextVar[list[tuple[str, bool]] | None] = ContextVar("prefect_beluga_cache_hits", default=None)


class CacheHits(list):
    """`(step name, hit)` of every cached step that finished, in order; see `cache_hits`."""

    @property
    def hits(self) -> list[str]:
        """The steps answered from the cache."""
        return [step for step, hit in self if hit]

    @property
    def misses(self) -> list[str]:
        """The cached steps that ran (and stored their output)."""
        return [step for step, hit in self if not hit]


@contextmanager
def cache_hits() -> Iterator[CacheHits]:
    """Record which cached steps were answered from the cache during the block.

    Steps run on this process's event loop are recorded (not those a task runner such as Dask
    runs elsewhere).

    Examples:
        ```python
        from prefect_beluga import Chain
        from prefect_beluga.orchestration import cache_hits

        def generate(state):
            return {"output": f"About {state['input']}"}

        chain = Chain([generate], name="faq", cache=True)
        chain.invoke({"input": "What is Prefect?"})   # runs generate, stores its output
        with cache_hits() as record:
            chain.invoke({"input": "What is Prefect?"})
        record.hits      # -> ['generate']: answered from the cache on the second call
        ```
    """
    record = CacheHits()
    token = _recorder.set(record)
    try:
        yield record
    finally:
        _recorder.reset(token)


def prefect_beluga_cache_hits(task: Any, task_run: Any, state: Any) -> None:
    """Prefect on_completion hook of a cached step's task: records a hit or a miss."""
    record = _recorder.get()
    if record is not None:
        record.append((task.name, state.name == "Cached"))


_HOOK_NAME = repr(prefect_beluga_cache_hits.__name__)


class _QuietHook(logging.Filter):
    """Drops the two INFO lines Prefect logs around this module's own hook on every cached task
    run ("Running hook ... in response to entering state 'Cached'", "Hook ... finished running
    successfully"). Anything else, including an error in the hook, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or _HOOK_NAME not in str(record.msg):
            return True
        message = record.getMessage()
        return not (message.startswith(f"Running hook {_HOOK_NAME} in response to entering state")
                    or message == f"Hook {_HOOK_NAME} finished running successfully")


_quiet_hook = _QuietHook()
_quiet_lock = threading.Lock()


def _quiet_hook_logs() -> None:
    """Install `_QuietHook` on Prefect's task-run logger: once, when the first cached task is
    built (never at import)."""
    task_runs = logging.getLogger("prefect.task_runs")
    with _quiet_lock:
        if _quiet_hook not in task_runs.filters:
            task_runs.addFilter(_quiet_hook)


def cached_task_options(runnable: Any, step: str, settings: CacheSettings) -> dict[str, Any]:
    """Keyword arguments of a Prefect task caching `runnable` across runs."""
    return _cached_options(StepValueKey(scope=settings.scope, step=step, runnable=runnable), settings)


def cached_substep_options(step: Any, settings: CacheSettings) -> dict[str, Any]:
    """Keyword arguments of a Prefect task caching the pure sub-step `step` by value."""
    return _cached_options(SubstepValueKey(step=step), settings)


def _cached_options(policy: CachePolicy, settings: CacheSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "cache_policy": policy,
        "persist_result": True,
        "cache_expiration": settings.expiration,
        "on_completion": [prefect_beluga_cache_hits],
    }
    _quiet_hook_logs()
    if settings.storage is not None:
        options["result_storage"] = settings.storage
    return options


def cache_steps(
    cache: Any, step_names: list[str], *, where: str
) -> set[str]:
    """Which of `step_names` a `cache=` option (bool, or a collection of step names) caches."""
    if isinstance(cache, bool):
        return set(step_names) if cache else set()
    if isinstance(cache, str) or not hasattr(cache, "__iter__"):
        raise ValidationError(f"{where}: cache must be True, False or a list of step names, got {cache!r}")
    chosen = set(cache)
    unknown = chosen - set(step_names)
    if unknown:
        raise ValidationError(f"{where}: cache names unknown step(s) {sorted(unknown)}; steps: {step_names}")
    return chosen
