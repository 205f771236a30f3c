"""Turning Runnables into Prefect tasks: the one place this happens.

A step (of a chain) or a node (of a graph) runs as a Prefect async task named after it. Its
retry policy is the task's: `retries`, `retry_delay_seconds` (a list for backoff),
`retry_jitter_factor`, a `retry_condition_fn` that spares permanent errors, and
`timeout_seconds` per attempt. Results are not cached or persisted by default: a step of an
LLM pipeline is rarely worth hashing its inputs on every call (see DESIGN.md, performance).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import Task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.utilities.annotations import quote

from prefect_beluga.core.config import RunConfig
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.retry import RetryOn, retry_after_of, should_retry
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.core.state import check_output


# Longest server-requested wait honoured per retry; beyond it the policy's own delay applies.
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a step is retried, as a Prefect task retry policy.

    Args:
        retries: Extra attempts after the first (as in Prefect; Beluga counts total attempts).
        retry_delay: Seconds before each retry; a list gives the delay per retry (backoff),
            its last value repeating.
        retry_jitter: Prefect's `retry_jitter_factor`: a delay may grow by up to this factor.
        retry_on: Exception type(s) or a predicate deciding what is retried; default:
            everything but permanent errors (see `prefect_beluga.core.retry.is_permanent`).
        timeout: Seconds one attempt may take (Prefect's task `timeout_seconds`).
    """

    retries: int = 0
    retry_delay: float | Sequence[float] = 0.0
    retry_jitter: float | None = None
    retry_on: RetryOn | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise ValidationError(f"retries must be an int >= 0, got {self.retries!r}")
        delays = self.retry_delay if isinstance(self.retry_delay, Sequence) else [self.retry_delay]
        if not delays or any(not isinstance(d, (int, float)) or d < 0 for d in delays):
            raise ValidationError(
                f"retry_delay must be seconds >= 0 or a non-empty list of them, got {self.retry_delay!r}"
            )
        if isinstance(self.retry_delay, Sequence):
            object.__setattr__(self, "retry_delay", tuple(self.retry_delay))
        if self.retry_jitter is not None and self.retry_jitter < 0:
            raise ValidationError(f"retry_jitter must be >= 0, got {self.retry_jitter!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValidationError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if self.retry_on is not None and not (
            callable(self.retry_on) or isinstance(self.retry_on, tuple)
        ):
            raise ValidationError(
                f"retry_on must be an exception type, a tuple of them or a predicate, got {self.retry_on!r}"
            )

    def delay_before(self, retry: int) -> float:
        """The configured delay before retry number `retry` (1 for the first retry)."""
        if isinstance(self.retry_delay, tuple):
            return float(self.retry_delay[min(retry, len(self.retry_delay)) - 1])
        return float(self.retry_delay)

    async def _retry_condition(self, task: Task, task_run: TaskRun, state: State) -> bool:
        """Prefect's `retry_condition_fn`: spare permanent errors, honour `Retry-After`.

        When the server asked for a longer wait than the policy's delay (a 429 or 503 with
        `Retry-After`), the difference is waited here, before Prefect schedules the retry.
        """
        exc = state.data
        if not isinstance(exc, BaseException) or not should_retry(exc, self.retry_on):
            return False
        asked = retry_after_of(exc)
        if asked is not None:
            extra = min(asked, MAX_RETRY_AFTER) - self.delay_before(max(task_run.run_count, 1))
            if extra > 0:
                await asyncio.sleep(extra)
        return True


def runnable_task(
    runnable: Runnable,
    *,
    name: str,
    where: str,
    policy: RetryPolicy,
    tags: Sequence[str] = (),
) -> Task:
    """A Prefect async task that runs `runnable` on a state dict and checks its output.

    Call it as `await step(state, config, upstream)`: `state` is passed quoted (Prefect does
    not walk it), `upstream` holds the exact objects parent tasks returned, which is how
    Prefect records the edges between task runs (`task_inputs`) and draws them in the UI.
    `where` (e.g. "step 2 of chain 'rag'") names the step in validation errors. `tags` go on
    every task run, so Prefect's tag concurrency limits apply to it.
    """

    async def run(state: Any, config: RunConfig, upstream: Any = None) -> dict[str, Any]:
        output = await runnable.ainvoke(state, config)
        return check_output(output, where=where)

    run.__qualname__ = run.__name__ = name  # shown in tracebacks
    return Task(
        run,
        name=name,
        task_run_name=name,
        retries=policy.retries,
        retry_delay_seconds=list(policy.retry_delay)
        if isinstance(policy.retry_delay, tuple)
        else policy.retry_delay,
        retry_jitter_factor=policy.retry_jitter,
        retry_condition_fn=policy._retry_condition,
        timeout_seconds=policy.timeout,
        tags=list(tags),
        cache_policy=NONE,
        persist_result=False,
    )


def call_args(state: dict[str, Any]) -> quote:
    """Wrap a state for a task call so Prefect passes it through without walking it."""
    return quote(state)
