"""The events of a stream: every name and shape, defined once.

A chain, graph, agent, Map or workflow stream (`astream`, `workflow.stream`) yields dicts of one
key: `{step_or_node: output}` as each step or node finishes, and these:

| key | value | when |
| --- | --- | --- |
| `END` `"__end__"` | the run's result, as `invoke` returns it | last |
| `TOKEN` `"__token__"` | `TokenEvent` | with `tokens=True`: each text delta of a chat model |
| `RETRY` `"__retry__"` | `RetryEvent` | with `tokens=True`: before a retried step's fresh stream |
| `TOOL_CALL` `"__tool_call__"` | `ToolCallEvent` | with `tokens=True`: an agent's model asked for a tool |
| `TOOL_RESULT` `"__tool_result__"` | `ToolResultEvent` | with `tokens=True`: that tool's outcome |
| `SKIPPED` `"__skipped__"` | the graph nodes a run did not take | a graph's branches not taken |

Inside a Map item, token and tool events also carry the item's `"index"`. The HTTP app
(`prefect_beluga.server`) ends a plain stream with one of `WAITING`, `CANCELLED` or `ERROR` when
the run waits for a signal, was cancelled, or failed.

```python
from prefect_beluga.core import events

event = {events.TOKEN: {"node": "answer", "text": "Hello"}}
if events.TOKEN in event:
    print(event[events.TOKEN]["text"])   # Hello
```
"""

from __future__ import annotations

from typing import Any, TypedDict

from typing_extensions import NotRequired

END = "__end__"
TOKEN = "__token__"
RETRY = "__retry__"
TOOL_CALL = "__tool_call__"
TOOL_RESULT = "__tool_result__"
SKIPPED = "__skipped__"
#: The HTTP app's plain stream: the run waits for a signal / was cancelled / failed.
WAITING = "__waiting__"
CANCELLED = "__cancelled__"
ERROR = "__error__"


class TokenEvent(TypedDict):
    node: str
    text: str
    index: NotRequired[int]


class RetryEvent(TypedDict):
    node: str
    attempt: int
    substep: NotRequired[str]
    index: NotRequired[int]


class ToolCallEvent(TypedDict):
    node: str
    tool: str
    id: str
    arguments: Any
    index: NotRequired[int]


class ToolResultEvent(TypedDict):
    node: str
    tool: str
    id: str
    ok: bool
    content: Any
    index: NotRequired[int]


__all__ = [
    "CANCELLED",
    "END",
    "ERROR",
    "RETRY",
    "SKIPPED",
    "TOKEN",
    "TOOL_CALL",
    "TOOL_RESULT",
    "WAITING",
    "RetryEvent",
    "TokenEvent",
    "ToolCallEvent",
    "ToolResultEvent",
]
