"""The hook through which a chat model learns that the caller wants its tokens, live.

`orchestration/` sets a `TokenSink` in the run's context when a caller streams with
`tokens=True` (`chain.astream(input, tokens=True)`), and names the step or node running
(`current_node`) around each step's execution, so the innermost step wins. A chat model
(`llms/`) asks `token_sink()`: only when a sink is set does it use the provider's streaming
API, handing each text delta to `emit_token`. An agent (`agents.py`) reports the tool calls
its model asks for, and their outcomes, the same way (`emit_tool_call`, `emit_tool_result`).
Nothing here imports Prefect.

A sink is thread-safe: a sync step calling `llm.generate(...)` runs in a worker thread (with a
copy of the context, so it sees the sink); its chunks are handed to the caller's event loop
with `call_soon_threadsafe`, which keeps their order.

```python
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
from typing import Any

#: Called with each event (a one-key dict) on the loop the sink was made on.
Deliver = Callable[[dict[str, Any]], Any]

TOKEN_KEY = "__token__"
RETRY_KEY = "__retry__"
TOOL_CALL_KEY = "__tool_call__"
TOOL_RESULT_KEY = "__tool_result__"


class TokenSink:
    """Where the text deltas of the chat models of one streamed call go.

    Args:
        deliver: Called with `{"__token__": {"node": node, "text": text}}` for every delta, and
            `{"__retry__": {"node": node, "attempt": n}}` before a step's retry, and an agent's
            `{"__tool_call__": {...}}` / `{"__tool_result__": {...}}` (see `tool_call`), always
            on the event loop that was running when the sink was made (or directly, when none was).
    """

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self.thread = threading.get_ident()

    def emit(self, node: str, text: str) -> None:
        """Hand one delta over, from any thread; deltas of one thread keep their order."""
        self._put({TOKEN_KEY: {"node": node, "text": text}})

    def retry(self, node: str, attempt: int, substep: str | None = None) -> None:
        """Tell the caller that `node` runs again (attempt `attempt`): its earlier text is void.

        With `substep`, only that sub-step of the node runs again: for an agent's model turn,
        the text since the node's last tool result is void; for a tool, nothing streamed is."""
        detail: dict[str, Any] = {"node": node, "attempt": attempt}
        if substep is not None:
            detail["substep"] = substep
        self._put({RETRY_KEY: detail})

    def tool_call(self, node: str, tool: str, call_id: str, arguments: Any) -> None:
        """Tell the caller that the model in `node` asked for `tool` (before the tool runs)."""
        self._put({TOOL_CALL_KEY: {"node": node, "tool": tool, "id": call_id, "arguments": arguments}})

    def tool_result(self, node: str, tool: str, call_id: str, content: str, ok: bool) -> None:
        """Tell the caller what the call `call_id` gave the model (`ok` False: an error message)."""
        self._put({TOOL_RESULT_KEY: {"node": node, "tool": tool, "id": call_id, "ok": ok, "content": content}})

    def _put(self, event: dict[str, Any]) -> None:
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


class _CurrentNode:
    """The name of the step or node running, set around each step's execution."""

    def __init__(self) -> None:
        self._var: ContextVar[str | None] = ContextVar("prefect_beluga_token_node", default=None)

    def get(self) -> str | None:
        return self._var.get()

    @contextlib.contextmanager
    def set_for(self, name: str) -> Iterator[None]:
        token = self._var.set(name)
        try:
            yield
        finally:
            self._var.reset(token)


_sink: ContextVar[TokenSink | None] = ContextVar("prefect_beluga_token_sink", default=None)
current_node = _CurrentNode()


def token_sink() -> TokenSink | None:
    """The sink of the streamed call this code runs in, or None (then: no streaming)."""
    return _sink.get()


def emit_token(text: str, *, default_node: str = "") -> None:
    """Hand `text` to the current sink, tagged with the current step or node (if any sink)."""
    sink = _sink.get()
    if sink is not None and text:
        sink.emit(current_node.get() or default_node, text)


def emit_tool_call(tool: str, call_id: str, arguments: Any, *, default_node: str = "") -> None:
    """Report a tool call the model asked for to the current sink (if any), tagged like tokens.

    Examples:
        ```python
        emit_tool_call("add", "call_1", {"a": 2, "b": 40}, default_node="adder")
        ```
    """
    sink = _sink.get()
    if sink is not None:
        sink.tool_call(current_node.get() or default_node, tool, call_id, arguments)


def emit_tool_result(tool: str, call_id: str, content: str, *, ok: bool, default_node: str = "") -> None:
    """Report the tool message a call gave the model to the current sink (if any)."""
    sink = _sink.get()
    if sink is not None:
        sink.tool_result(current_node.get() or default_node, tool, call_id, content, ok)


__all__ = [
    "RETRY_KEY",
    "TOKEN_KEY",
    "TOOL_CALL_KEY",
    "TOOL_RESULT_KEY",
    "TokenSink",
    "current_node",
    "emit_token",
    "emit_tool_call",
    "emit_tool_result",
    "token_sink",
]
