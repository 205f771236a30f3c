"""The process helper the crash tests share: no child is left behind, however the block ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prefect_beluga.testing.helpers import reaped

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
