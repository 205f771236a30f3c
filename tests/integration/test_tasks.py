"""Runnables as Prefect tasks: the retry policy."""

import time

import pytest

from prefect_beluga import Chain, ValidationError
from prefect_beluga.orchestration import RetryPolicy


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
