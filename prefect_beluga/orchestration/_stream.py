"""Leaving a stream early, on Prefect's side: the run ends Cancelled, never Crashed.

The stream itself (the events, the end, the stop signal a caller's leaving requests) is
`prefect_beluga.core.event_stream`: any Runnable streams through it, Prefect or not.

A caller that stops reading (`break`, `aclose()`, the generator garbage-collected, the task
iterating it cancelled) stops the run, as Prefect's **Cancelled**, never Crashed: the stream's
`StopSignal` is requested, which cancels the innermost blocks running for the call (a chat
model's request in flight, else the step's task function); each step's task function turns
that into a `Cancelled` state it returns (`cancelled_step`), and the chain's or graph's flow
function does the same (`stopped_body`), so Prefect's engines record Cancelled states the
supported way (a function returning a state) instead of meeting an `asyncio.CancelledError`,
which they record as a crash. Nothing is cancelled while Prefect's own engine code runs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from prefect.exceptions import CancelledRun
from prefect.states import Cancelled, State

from prefect_beluga.core.config import RunConfig
from prefect_beluga.core.event_stream import STOPPED_READING
from prefect_beluga.core.streaming import StopSignal, stop_signal


def stop_requested() -> str | None:
    """Why the streamed call this code runs for is stopping (None: it is not, or no stream)."""
    signal = stop_signal()
    return signal.requested if signal is not None else None


def raise_if_stopped() -> None:
    """Between steps: raise Prefect's `CancelledRun` when the caller left the stream (the next
    step does not start)."""
    reason = stop_requested()
    if reason is not None:
        raise CancelledRun(reason)


def raise_if_cancelled(value: Any) -> Any:
    """`value`, a step task's result, unless it is the `Cancelled` state `cancelled_step`
    returned: then Prefect's `CancelledRun` (Prefect hands a state a task returned back to its
    caller as the call's value)."""
    if isinstance(value, State) and value.is_cancelled():
        raise CancelledRun(value.message or STOPPED_READING)
    return value


async def _unwrapped(call: Awaitable[Any]) -> Any:
    return raise_if_cancelled(await call)


def step_call(call: Any) -> Any:
    """A step task's call (a coroutine), whose `Cancelled` state is raised as `CancelledRun`
    while the caller streams; unchanged outside a streamed call."""
    if stop_signal() is None or not inspect.isawaitable(call):
        return call
    return _unwrapped(call)


def absorb_stop() -> CancelledRun | None:
    """Inside `except asyncio.CancelledError`: when the caller left the stream, absorb the
    cancellation and return the `CancelledRun` to raise instead (None: re-raise it)."""
    reason = stop_requested()
    if reason is None:
        return None
    _uncancel()
    return CancelledRun(reason)


def _uncancel() -> None:
    """This task absorbed a cancellation: forget the request (Python 3.11+)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None and task is not None and task.cancelling():
        uncancel()


async def cancelled_step(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Run a step's task function; when the caller left the stream, return Prefect's
    `Cancelled` state instead of raising, so the task run ends Cancelled, not Crashed.

    Outside a streamed call this is `await fn(...)` behind one context-variable lookup. A
    step that begins after the caller left does not run."""
    signal = stop_signal()
    if signal is None:
        return await fn(*args, **kwargs)
    if signal.requested is not None:
        return Cancelled(message=signal.requested)
    with signal.section():
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            if signal.requested is None:
                raise
            _uncancel()
            return Cancelled(message=signal.requested)
        except Exception:
            if signal.requested is None:
                raise
            return Cancelled(message=signal.requested)  # e.g. a sub-step's CancelledRun


Body = Callable[[dict[str, Any], RunConfig], Awaitable[Any]]


async def stopped_body(body: Body, state: dict[str, Any], config: RunConfig) -> Any:
    """Run a chain's or graph's flow function; when the caller left the stream, return
    Prefect's `Cancelled` state, so the flow run ends Cancelled (and the caller's
    `await flow(...)` raises Prefect's `CancelledRun`)."""
    signal = stop_signal()
    if signal is None:
        return await body(state, config)
    try:
        return await body(state, config)
    except asyncio.CancelledError:
        if signal.requested is None:
            raise
        _uncancel()
        return _cancelled(signal)
    except Exception:
        if signal.requested is None:
            raise
        return _cancelled(signal)


def _cancelled(signal: StopSignal) -> State:
    return Cancelled(message=signal.requested or STOPPED_READING)
