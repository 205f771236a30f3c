"""Runnables as Prefect tasks: the retry policy."""

import time

import pytest

from prefect_beluga import Chain, ValidationError
from prefect_beluga.core.runnable import coerce_to_runnable
from prefect_beluga.orchestration import RetryPolicy
from prefect_beluga.orchestration._cache import CacheSettings
from prefect_beluga.orchestration._tasks import StepTask, runnable_task


class RateLimited(Exception):
    status_code = 429

    def __init__(self, retry_after):
        super().__init__("slow down")
        self.response = type("Response", (), {"headers": {"retry-after": str(retry_after)}})()


async def test_a_retry_waits_as_long_as_retry_after_asks():
    attempts = []

    def limited(state):
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RateLimited(retry_after=1)
        return {"ok": True}

    result = await Chain([limited], name="rate-limited", retries=1, retry_delay=0).ainvoke({})
    assert result["ok"] and len(attempts) == 2
    assert attempts[1] - attempts[0] >= 1.0  # the server's wait, not the policy's 0 s


def test_delay_per_retry_repeats_the_last_value():
    policy = RetryPolicy(retries=4, retry_delay=[1, 2, 4])
    assert [policy.delay_before(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 4]
    assert RetryPolicy(retries=1, retry_delay=3).delay_before(1) == 3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"retries": -1}, "retries must be an int >= 0"),
        ({"retries": 1.5}, "retries must be an int >= 0"),
        ({"retry_delay": -1}, "retry_delay must be seconds >= 0"),
        ({"retry_delay": []}, "retry_delay must be seconds >= 0"),
        ({"retry_jitter": -0.5}, "retry_jitter must be a number >= 0"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"retry_on": "ValueError"}, "retry_on must be an exception type"),
    ],
)
def test_bad_policies_are_rejected(options, message):
    with pytest.raises(ValidationError, match=message):
        RetryPolicy(**options)


@pytest.mark.parametrize("cached", [False, True])
def test_a_step_built_again_for_another_run_name_is_the_same_kind_of_step(cached):
    """A graph loop's `node[2]`: a StepTask with the new run name and the step's options; a
    cached step's copy keeps its own key inside a flow run (durable as it is)."""
    step = coerce_to_runnable(lambda state: {"ok": True}, where="test")
    cache = CacheSettings("graph 'loop'") if cached else None
    first = runnable_task(step, name="node", where="node 'node'", policy=RetryPolicy(retries=2), cache=cache)
    second = first.with_options(task_run_name="node[2]")

    assert isinstance(second, StepTask) and second.task_run_name == "node[2]"
    assert (second.name, second.retries, second.task_key) == (first.name, first.retries, first.task_key)
    assert second.cache_policy == first.cache_policy
    assert (second.durable().cache_policy == second.cache_policy) is cached
