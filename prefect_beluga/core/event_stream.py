"""Streaming a Runnable's run to its caller: its events as they happen, its end, leaving early.

`stream_events(runnable, input, config, tokens=...)` runs `runnable.ainvoke(input, config)` as a
task and yields what the run reports while it runs: the `{name: output}` updates a chain or graph
puts on its `StreamSink`, and, with `tokens=True`, the events of the `TokenSink` its chat models
and agents hand their text deltas and tool calls to (`core/streaming.py`); then
`{"__end__": result}`. With `output_event=True` (a Runnable streamed on its own: an agent, a chat
model, a RAG step) the runnable's own output comes first as `{runnable.name: output}` and its
events are tagged with its name, so its stream is event for event what it streams as the one
step of a chain (whose `__end__` is the chain's state, input keys included).

Leaving early (`break`, `aclose()`, the generator garbage-collected, the task iterating it
cancelled) requests the stream's `StopSignal`: the innermost `cancellable()` blocks running for
the call are cancelled (a chat model's request in flight, a step's task function), and the
generator returns once the run has ended. How a Prefect run records that as Cancelled, not
Crashed, is `orchestration/_stream.py`'s part; nothing here imports Prefect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextvars import ContextVar
from typing import Any, Protocol

from prefect_beluga.core import events
from prefect_beluga.core.config import ConfigLike
from prefect_beluga.core.streaming import StopSignal, TokenSink, current_node, stop_signal, stoppable

#: The message of the Cancelled states of a run whose caller left its stream.
STOPPED_READING = "Cancelled: the caller stopped reading the stream"
#: Seconds a run may take to stop after its caller left, before it is cancelled outright.
STOP_GRACE = 10.0


class Streamed(Protocol):
    """What is streamed: a Runnable (`core.runnable`, which streams through this module)."""

    name: str

    def ainvoke(self, input: Any, config: ConfigLike = None) -> Awaitable[Any]:
        """Run on `input`; the run whose events are streamed."""


class StreamSink:
    """Collects `{name: output}` updates from the run that the caller is streaming."""

    _current: ContextVar[StreamSink | None] = ContextVar("prefect_beluga_stream_sink", default=None)

    def __init__(self, owner: Streamed) -> None:
        self.owner = owner
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @classmethod
    def current(cls, owner: Streamed) -> StreamSink | None:
        """The sink of the call streaming `owner` (not a chain nested inside it), if any."""
        sink = cls._current.get()
        return sink if sink is not None and sink.owner is owner else None

    def put(self, update: dict[str, Any]) -> None:
        self.queue.put_nowait(update)


async def stream_events(
    runnable: Streamed, input: Any, config: ConfigLike, *, tokens: bool = False, output_event: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """Run `runnable.ainvoke(input, config)`, yielding each update it reports, then
    `{"__end__": result}`. With `tokens`, the chat models inside it stream, and each text
    delta comes as `{"__token__": {"node": name, "text": delta}}` as it arrives (a step's
    retry as `{"__retry__": {"node": name, "attempt": n}}` before its fresh stream, an agent's
    tool calls as `__tool_call__` / `__tool_result__`); the events of a Map item also carry its
    `"index"`. With `output_event`, events not tagged by a step inside are tagged with
    `runnable.name`, and `{runnable.name: result}` comes before the end.

    Leaving early stops the run (see the module docstring) and waits for it to end."""
    sink = StreamSink(runnable)
    signal = StopSignal(stop_signal())
    token = StreamSink._current.set(sink)
    try:
        with (
            stoppable(signal),
            TokenSink(sink.put).active() if tokens else contextlib.nullcontext(),
            current_node.set_for(runnable.name) if output_event else contextlib.nullcontext(),
        ):
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
        result = run.result()
        if output_event:
            yield {runnable.name: result}
        yield {events.END: result}
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
        except Exception:  # e.g. Prefect's CancelledRun of a run stopped after its reader left
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
    its outcome (e.g. Prefect's `CancelledRun`) is nobody's to read."""
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


__all__ = ["STOPPED_READING", "STOP_GRACE", "StreamSink", "stream_events"]
