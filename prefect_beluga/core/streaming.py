"""The hook through which a chat model learns that the caller wants its tokens, live.

`orchestration/` sets a `TokenSink` in the run's context when a caller streams with
`tokens=True` (`chain.astream(input, tokens=True)`), and names the step or node running
(`current_node`) around each step's execution, so the innermost step wins; a Map item's task
run also sets its index (`current_item`), which its events carry as `"index"`. A chat model
(`llms/`) asks `token_sink()`: only when a sink is set does it use the provider's streaming
API, handing each text delta to `emit_token`. An agent (`prefect_beluga.agents`) reports the tool calls
its model asks for, and their outcomes, the same way (`emit_tool_call`, `emit_tool_result`).
Nothing here imports Prefect.

A streamed call also sets a `StopSignal`: when the caller stops reading, orchestration
`request`s it, and the innermost `cancellable()` blocks running for the call (a step's task
run, a chat model's request, in any thread) are cancelled, innermost first, so each level can
record that it was cancelled before the one around it ends (see docs/streaming.md, "Leaving a
stream early").

A sink is thread-safe: a sync step calling `llm.generate(...)` runs in a worker thread (with a
copy of the context, so it sees the sink); its chunks are handed to the caller's event loop
with `call_soon_threadsafe`, which keeps their order.

```python
from prefect_beluga.core.streaming import TokenSink, current_node, emit_token

sink = TokenSink(print)
with sink.active(), current_node.set_for("answer"):
    emit_token("Hello")   # prints: {'__token__': {'node': 'answer', 'text': 'Hello'}}
```
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from prefect_beluga.core import events

#: Called with each event (a one-key dict) on the loop the sink was made on.
Deliver = Callable[[dict[str, Any]], Any]

T = TypeVar("T")


class TokenSink:
    """Where the text deltas of the chat models of one streamed call go.

    Args:
        deliver: Called with `{"__token__": {"node": node, "text": text}}` for every delta, and
            `{"__retry__": {"node": node, "attempt": n}}` before a step's retry, and an agent's
            `{"__tool_call__": {...}}` / `{"__tool_result__": {...}}` (see `tool_call`), always
            on the event loop that was running when the sink was made (or directly, when none was).
            An event of a Map item has its `"index"` after `"node"`.
    """

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self.thread = threading.get_ident()

    def emit(self, node: str, text: str, index: int | None = None) -> None:
        """Hand one delta over, from any thread; deltas of one thread keep their order.

        `index` is that of the Map item the delta comes from (None: not from a Map item)."""
        self._put(events.TOKEN, node, index, text=text)

    def retry(self, node: str, attempt: int, substep: str | None = None, index: int | None = None) -> None:
        """Tell the caller that `node` runs again (attempt `attempt`): its earlier text is void.

        With `substep`, only that sub-step of the node runs again: for an agent's model turn,
        the text since the node's last tool result is void; for a tool, nothing streamed is."""
        fields: dict[str, Any] = {"attempt": attempt}
        if substep is not None:
            fields["substep"] = substep
        self._put(events.RETRY, node, index, **fields)

    def tool_call(self, node: str, tool: str, call_id: str, arguments: Any, index: int | None = None) -> None:
        """Tell the caller that the model in `node` asked for `tool` (before the tool runs)."""
        self._put(events.TOOL_CALL, node, index, tool=tool, id=call_id, arguments=arguments)

    def tool_result(
        self, node: str, tool: str, call_id: str, content: str, ok: bool, index: int | None = None
    ) -> None:
        """Tell the caller what the call `call_id` gave the model (`ok` False: an error message)."""
        self._put(events.TOOL_RESULT, node, index, tool=tool, id=call_id, ok=ok, content=content)

    def _put(self, key: str, node: str, index: int | None, **fields: Any) -> None:
        event = {key: {**source_fields(node, index), **fields}}
        if self.loop is None or threading.get_ident() == self.thread:
            self.deliver(event)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.deliver, event)

    @contextlib.contextmanager
    def active(self) -> Iterator[TokenSink]:
        """Make this the sink of the code run in this context (and the tasks it starts)."""
        token = _sink.set(self)
        try:
            yield self
        finally:
            _sink.reset(token)


def source_fields(node: str, index: int | None = None) -> dict[str, Any]:
    """Where an event comes from, as its first fields: `node`, and `index` for a Map item."""
    return {"node": node} if index is None else {"node": node, "index": index}


class _Current(Generic[T]):
    """A value set around a block of code (and the tasks it starts); the innermost wins."""

    def __init__(self, name: str) -> None:
        self._var: ContextVar[T | None] = ContextVar(name, default=None)

    def get(self) -> T | None:
        return self._var.get()

    @contextlib.contextmanager
    def set_for(self, value: T) -> Iterator[None]:
        token = self._var.set(value)
        try:
            yield
        finally:
            self._var.reset(token)


_sink: ContextVar[TokenSink | None] = ContextVar("prefect_beluga_token_sink", default=None)
#: The name of the step or node running, set around each step's execution.
current_node: _Current[str] = _Current("prefect_beluga_token_node")
#: The index of the Map item running, set by its task run; steps nested in the item keep it.
current_item: _Current[int] = _Current("prefect_beluga_token_item")


def token_sink() -> TokenSink | None:
    """The sink of the streamed call this code runs in, or None (then: no streaming)."""
    return _sink.get()


def emit_token(text: str, *, default_node: str = "") -> None:
    """Hand `text` to the current sink (if any), tagged with the current step or node and Map item."""
    sink = _sink.get()
    if sink is not None and text:
        sink.emit(current_node.get() or default_node, text, current_item.get())


def emit_tool_call(tool: str, call_id: str, arguments: Any, *, default_node: str = "") -> None:
    """Report a tool call the model asked for to the current sink (if any), tagged like tokens.

    Examples:
        ```python
        from prefect_beluga.core.streaming import TokenSink, emit_tool_call

        with TokenSink(print).active():
            emit_tool_call("add", "call_1", {"a": 2, "b": 40}, default_node="adder")
        # prints: {'__tool_call__': {'node': 'adder', 'tool': 'add', 'id': 'call_1', 'arguments': {'a': 2, 'b': 40}}}
        ```
    """
    sink = _sink.get()
    if sink is not None:
        sink.tool_call(current_node.get() or default_node, tool, call_id, arguments, current_item.get())


def emit_tool_result(tool: str, call_id: str, content: str, *, ok: bool, default_node: str = "") -> None:
    """Report the tool message a call gave the model to the current sink (if any)."""
    sink = _sink.get()
    if sink is not None:
        sink.tool_result(current_node.get() or default_node, tool, call_id, content, ok, current_item.get())


class _Section:
    """One running `cancellable()` block: where it runs, and the block it is nested in."""

    def __init__(self, parent: _Section | None) -> None:
        self.parent = parent
        self.children = 0  # active blocks nested in this one
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.thread = threading.get_ident()
        self.active = True

    def cancel(self) -> None:
        """Cancel the block's task, on its own loop; a block that ended meanwhile is left alone."""
        if threading.get_ident() == self.thread:
            self._cancel_if_active()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._cancel_if_active)

    def _cancel_if_active(self) -> None:
        if self.active and self.task is not None and not self.task.done():
            asyncio.Task.cancel(self.task)  # the plain cancel, whatever the task's class adds


class StopSignal:
    """Set around one streamed call: the caller's leaving asks the code running for it to stop.

    `request(reason)` records why and cancels the innermost `cancellable()` blocks running
    (those with no block running inside them); blocks entered afterwards see `requested` at
    once. A signal made inside another one's call (a stream inside a streamed step) is stopped
    with it.
    """

    def __init__(self, parent: StopSignal | None = None) -> None:
        self.parent = parent
        self.reason: str | None = None
        self._sections: set[_Section] = set()
        self._children: list[StopSignal] = []
        self._lock = threading.Lock()
        if parent is not None:
            with parent._lock:
                parent._children.append(self)

    @property
    def requested(self) -> str | None:
        """Why the call is to stop (None: it is not)."""
        if self.reason is not None:
            return self.reason
        return self.parent.requested if self.parent is not None else None

    def request(self, reason: str) -> None:
        """Ask the call to stop: cancel its innermost running blocks (and those of nested calls)."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            leaves = [s for s in self._sections if s.children == 0]
            children = list(self._children)
        for section in leaves:
            section.cancel()
        for child in children:
            child.request(reason)

    def close(self) -> None:
        """The call is over: forget it in the signal it was nested in."""
        if self.parent is not None:
            with self.parent._lock:
                if self in self.parent._children:
                    self.parent._children.remove(self)

    @contextlib.contextmanager
    def section(self) -> Iterator[None]:
        """Run a block that `request` cancels while nothing cancellable runs inside it."""
        parent = _section.get()
        section = _Section(parent)
        with self._lock:
            if parent is not None:
                parent.children += 1
            self._sections.add(section)
            stopped = self.requested is not None
        token = _section.set(section)
        try:
            if stopped:
                section.cancel()  # asked to stop before it began: cancel at its first await
            yield
        finally:
            _section.reset(token)
            with self._lock:
                section.active = False
                self._sections.discard(section)
                if parent is not None:
                    parent.children -= 1
                # A block in a worker thread (a sync step's model request) ended while the call
                # stops: the block waiting for that thread is now innermost, and is cancelled
                # too (in the same thread, Prefect still records the inner block's state).
                cascade = (
                    parent is not None and parent.children == 0 and parent.thread != section.thread
                    and self.requested is not None
                )
            if cascade:
                parent.cancel()


_stop: ContextVar[StopSignal | None] = ContextVar("prefect_beluga_stop_signal", default=None)
_section: ContextVar[_Section | None] = ContextVar("prefect_beluga_stop_section", default=None)


def stop_signal() -> StopSignal | None:
    """The stop signal of the streamed call this code runs in, or None."""
    return _stop.get()


@contextlib.contextmanager
def stoppable(signal: StopSignal) -> Iterator[StopSignal]:
    """Make `signal` the stop signal of the code run in this context (and the tasks it starts)."""
    token = _stop.set(signal)
    try:
        yield signal
    finally:
        _stop.reset(token)


@contextlib.contextmanager
def cancellable() -> Iterator[None]:
    """Let a caller that stops reading the stream cancel this block (e.g. a model request).

    Outside a streamed call, or outside a running event loop, it does nothing. Inside one, the
    block is cancelled (`asyncio.CancelledError` at its current await) when the caller leaves,
    unless a cancellable block runs inside it (that one is cancelled instead)."""
    signal = _stop.get()
    if signal is None:
        yield
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        yield
        return
    with signal.section():
        yield


__all__ = [
    "StopSignal",
    "TokenSink",
    "cancellable",
    "current_item",
    "current_node",
    "emit_token",
    "emit_tool_call",
    "emit_tool_result",
    "source_fields",
    "stop_signal",
    "stoppable",
    "token_sink",
]
