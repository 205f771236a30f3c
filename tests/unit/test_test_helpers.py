"""The helpers the tests share: no child process is left behind, however the block ends; one
waiting loop (`eventually`) that says what it waited for."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from prefect_beluga.testing.helpers import aeventually, eventually, reaped

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_a_child_still_running_when_the_block_fails_is_killed_and_reaped():
    child = subprocess.Popen(SLEEPER)
    with pytest.raises(AssertionError), reaped(child):
        assert child.poll() is None
        raise AssertionError("the test failed while the child ran")
    assert child.returncode is not None and child.returncode < 0  # killed by a signal, and reaped


def test_a_child_that_already_exited_is_left_as_it_ended():
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with reaped(child):
        child.wait(30)
    assert child.returncode == 3


# -- eventually: the one waiting loop --------------------------------------------------------------


def test_eventually_returns_the_first_truthy_value():
    calls = []

    def check():
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    assert eventually(check, "three calls", timeout=30, interval=0.01) == 3
    assert len(calls) == 3


def test_eventually_counts_a_failed_assert_as_not_yet_and_names_what_it_waited_for():
    def check():
        state = "RUNNING"
        assert state == "PAUSED", f"the run is still {state}"

    message = r"waited 0.1s for the run to pause; last saw AssertionError: the run is still RUNNING"
    with pytest.raises(AssertionError, match=message):
        eventually(check, "the run to pause", timeout=0.1, interval=0.01)
    with pytest.raises(AssertionError, match=r"waited 0.1s for a line; last saw ''"):
        eventually(lambda: "", "a line", timeout=0.1, interval=0.01)


def test_eventually_lets_other_errors_through_at_once():
    with pytest.raises(ZeroDivisionError):
        eventually(lambda: 1 / 0, "never", timeout=30)


async def test_aeventually_awaits_a_coroutine_check():
    seen = []

    async def check():
        seen.append(1)
        await asyncio.sleep(0)
        return "done" if len(seen) == 2 else ""

    assert await aeventually(check, "two looks", timeout=30, interval=0.01) == "done"
    with pytest.raises(AssertionError, match="waited 0.05s for nothing"):
        await aeventually(lambda: 0, "nothing", timeout=0.05, interval=0.01)


def test_eventually_stops_waiting_when_the_child_it_waits_on_has_exited():
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(4)"])
    with reaped(child):
        child.wait(30)
        with pytest.raises(AssertionError, match=r"the child process exited \(4\) before the first line"):
            eventually(lambda: False, "the first line", timeout=60, process=child)


def test_eventually_says_what_a_piped_child_wrote_to_stderr_before_it_exited():
    code = "import sys; sys.stderr.write('no config found'); raise SystemExit(2)"
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    with reaped(child):
        child.wait(30)
        with pytest.raises(AssertionError, match=r"exited \(2\) before the ready file; its stderr ends:\nno config"):
            eventually(lambda: False, "the ready file", timeout=60, process=child)


async def test_a_barrier_goes_on_after_its_timeout_with_the_last_value_seen():
    assert eventually(lambda: [], "a run", timeout=0.05, interval=0.01, raises=False) == []
    assert await aeventually(lambda: 0, "a run", timeout=0.05, interval=0.01, raises=False) == 0
    assert eventually(lambda: "now", "a run", timeout=0, raises=False) == "now"
