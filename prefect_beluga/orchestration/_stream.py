"""Streaming the updates of a running chain or graph to the caller, and leaving a stream early.

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
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from prefect.exceptions import CancelledRun
from prefect.states import Cancelled, State

from prefect_beluga.core.config import ConfigLike, RunConfig
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.core.streaming import StopSignal, TokenSink, stop_signal, stoppable

END_KEY = "__end__"
#: The message of the Cancelled states of a run whose caller left its stream.
STOPPED_READING = "Cancelled: the caller stopped reading the stream"
#: Seconds a run may take to stop after its caller left, before it is cancelled outright.
STOP_GRACE = 10.0


class StreamSink:
    """Collects `{name: output}` updates from the run that the caller is streaming."""

    _current: ContextVar[StreamSink | None] = ContextVar("prefect_beluga_stream_sink", default=None)

    def __init__(self, owner: Runnable) -> None:
        self.owner = owner
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @classmethod
    def current(cls, owner: Runnable) -> StreamSink | None:
        """The sink of the call streaming `owner` (not a chain nested inside it), if any."""
        sink = cls._current.get()
        return sink if sink is not None and sink.owner is owner else None

    def put(self, update: dict[str, Any]) -> None:
        self.queue.put_nowait(update)


async def stream_updates(
    runnable: Runnable, input: Any, config: ConfigLike, *, tokens: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """Run `runnable.ainvoke(input, config)`, yielding each update it reports, then
    `{"__end__": result}`. With `tokens`, the chat models inside it stream, and each text
    delta comes as `{"__token__": {"node": name, "text": delta}}` as it arrives (a step's
    retry as `{"__retry__": {"node": name, "attempt": n}}` before its fresh stream); the
    events of a Map item also carry its `"index"`.

    Leaving early stops the run (see the module docstring) and waits for it to end."""
    sink = StreamSink(runnable)
    signal = StopSignal(stop_signal())
    token = StreamSink._current.set(sink)
    try:
        with stoppable(signal), TokenSink(sink.put).active() if tokens else contextlib.nullcontext():
            # A task copies the context: the run sees the sinks and the stop signal.
            run = _StreamedRun(runnable.ainvoke(input, config), signal)
    finally:
        StreamSink._current.reset(token)
    getter: asyncio.Future[dict[str, Any]] | None = None
    try:
        while not run.done() or not sink.queue.empty():
            getter = asyncio.ensure_future(sink.queue.get())
            await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        yield {END_KEY: run.result()}
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        try:
            if not run.done():
                signal.request(STOPPED_READING)
                await _wait_stopped(run)
            else:
                _retrieve(run)  # a run that failed after the caller left: nobody reads its error
        finally:
            signal.close()


class _StreamedRun(asyncio.Task):  # type: ignore[type-arg]
    """The streamed call's task. Once the task that reads the stream has finished without
    closing it (a script that breaks out of `async for` and returns from `asyncio.run`, whose
    teardown then cancels every task left), cancelling it asks it to stop, as leaving the
    stream does: a plain cancel would land inside Prefect's engine, which records a crash.
    While the reader lives, a cancel is an ordinary one (anyio's cancel scopes use them)."""

    def __init__(self, call: Awaitable[Any], signal: StopSignal) -> None:
        super().__init__(self._run(call))
        self._signal = signal
        self._reader = asyncio.current_task()
        self._forced = False
        self._abandoned = False

    async def _run(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except CancelledRun:
            if self._abandoned:  # end as cancelled: nobody reads it, asyncio's teardown stays quiet
                raise asyncio.CancelledError(STOPPED_READING) from None
            raise

    def cancel(self, msg: Any = None) -> bool:
        if self._forced or self.done() or self._reader is None or not self._reader.done():
            return super().cancel(msg)
        self._abandoned = True
        if self._signal.requested is None:
            self._signal.request(STOPPED_READING)
        return True

    def force_cancel(self) -> None:
        """Cancel outright (a step that ignored the stop for `STOP_GRACE` seconds)."""
        self._forced = True
        super().cancel()


async def _wait_stopped(run: _StreamedRun) -> None:
    """Wait for a run asked to stop to end (cancelled outright after `STOP_GRACE` seconds);
    its outcome (Prefect's `CancelledRun`) is nobody's to read."""
    try:
        await asyncio.wait({run}, timeout=STOP_GRACE)
        if not run.done():
            run.force_cancel()  # a step that ignores the stop: Prefect records the cut as a crash
            await asyncio.wait({run})
    except asyncio.CancelledError:
        run.cancel()  # the caller is cancelled again while waiting: stop waiting
        raise
    finally:
        if run.done():
            _retrieve(run)
        else:
            run.add_done_callback(_retrieve)


def _retrieve(run: asyncio.Future[Any]) -> None:
    if not run.cancelled():
        run.exception()


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
