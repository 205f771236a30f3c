"""`core.streaming.StopSignal`: a stream's caller leaving cancels the innermost cancellable
blocks only, in any thread; blocks begun afterwards are cancelled at once (no Prefect here)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from prefect_beluga.core.streaming import StopSignal, cancellable, stop_signal, stoppable


async def test_only_the_innermost_block_is_cancelled_and_the_outer_one_sees_it_through():
    signal = StopSignal()
    inner_entered = asyncio.Event()
    seen: list[str] = []

    async def run() -> None:
        with cancellable():  # a step
            try:
                with cancellable():  # its model request
                    inner_entered.set()
                    await asyncio.sleep(60)
            except asyncio.CancelledError:
                seen.append(f"inner cancelled, stop: {stop_signal().requested}")
            await asyncio.sleep(0)  # the outer block was not cancelled: it goes on
            seen.append("outer went on")

    with stoppable(signal):
        task = asyncio.ensure_future(run())
    await inner_entered.wait()
    signal.request("left")
    await task
    assert seen == ["inner cancelled, stop: left", "outer went on"]


async def test_a_block_begun_after_the_request_is_cancelled_at_its_first_await():
    signal = StopSignal()
    signal.request("left")
    with stoppable(signal), pytest.raises(asyncio.CancelledError):
        with cancellable():
            await asyncio.sleep(60)


async def test_a_nested_signal_is_stopped_with_its_parent_and_not_the_other_way_round():
    outer = StopSignal()
    inner = StopSignal(outer)
    inner.request("inner left")
    assert (inner.requested, outer.requested) == ("inner left", None)
    other = StopSignal(outer)
    outer.request("outer left")
    assert other.requested == "outer left"
    other.close()
    inner.close()


async def test_a_block_in_a_worker_thread_is_cancelled_on_its_own_loop_then_the_block_awaiting_it():
    signal = StopSignal()
    in_thread, thread_done = threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def sync_step() -> None:  # a sync step calling a chat model: its own event loop in the thread
        async def request() -> None:
            with cancellable():
                in_thread.set()
                await asyncio.sleep(60)

        try:
            asyncio.run(request())
        except asyncio.CancelledError:
            outcome["thread"] = "cancelled"
        finally:
            thread_done.set()

    async def step() -> None:
        with cancellable():
            try:
                await asyncio.to_thread(sync_step)
            except asyncio.CancelledError:
                outcome["step"] = "cancelled"

    with stoppable(signal):
        task = asyncio.ensure_future(step())
    await asyncio.to_thread(in_thread.wait, 10)
    signal.request("left")
    await asyncio.wait_for(task, 10)
    await asyncio.to_thread(thread_done.wait, 10)
    assert outcome == {"thread": "cancelled", "step": "cancelled"}


def test_without_a_signal_or_a_loop_cancellable_does_nothing():
    with cancellable():
        pass
    with stoppable(StopSignal()), cancellable():
        pass  # no running loop: nothing to cancel
