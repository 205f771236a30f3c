"""Streaming the updates of a running chain or graph to the caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from prefect_beluga.core.config import ConfigLike
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.core.streaming import TokenSink

END_KEY = "__end__"


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
    events of a Map item also carry its `"index"`."""
    sink = StreamSink(runnable)
    token = StreamSink._current.set(sink)
    try:
        with TokenSink(sink.put).active() if tokens else contextlib.nullcontext():
            # ensure_future copies the context: the run sees both sinks.
            run = asyncio.ensure_future(runnable.ainvoke(input, config))
    finally:
        StreamSink._current.reset(token)
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
        if not run.done():
            run.cancel()
