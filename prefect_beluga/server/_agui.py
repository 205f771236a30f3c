"""The package's stream events as AG-UI events: the one place that maps them.

A workflow run's stream (`workflow.astream(run_id)`, docs/streaming.md) is a sequence of plain
dicts; `AguiMapper.feed` turns each into the AG-UI events (the `ag-ui-protocol` package's types)
a chat UI understands:

- (the stream opens): `RUN_STARTED`, `STATE_SNAPSHOT`;
- `__token__` `{node, text}`: `TEXT_MESSAGE_START` (a node's first text since its last tool
  event), `TEXT_MESSAGE_CONTENT`; a node seen for the first time: `STEP_STARTED`, `STATE_SNAPSHOT`;
- `__tool_call__` `{node, tool, id, arguments}`: the node's open message ends
  (`TEXT_MESSAGE_END`); `TOOL_CALL_START`, `TOOL_CALL_ARGS` (the arguments' JSON), `TOOL_CALL_END`;
- `__tool_result__` `{node, tool, id, ok, content}`: `TOOL_CALL_RESULT` (`metadata.ok`);
- `__retry__` `{node, attempt, substep?}`: `CUSTOM` `beluga.retry`, whose
  `value.void_message_ids` are the messages a UI clears;
- `{step: output}` (in-process streams): `STEP_FINISHED`, `STATE_SNAPSHOT`;
  `__skipped__` `[node]`: `STATE_SNAPSHOT`;
- `__end__` result: open messages end; `STATE_SNAPSHOT`; `RUN_FINISHED` (`result`, outcome success);
- the run failed / was cancelled: `RUN_ERROR` (`code` `WORKFLOW_FAILED`) / `RUN_FINISHED`
  (outcome cancelled);
- the run waits for a signal (read from its state): `CUSTOM` `approval_requested` (the signal
  `approve:<tool>` of an agent's `requires_approval` tool) or `signal_requested`.

The mapping is a pure function of the events fed in (ids included: `msg-<k>` counts the
messages), so every replica that reads a run's stream from the Prefect API produces the same
AG-UI events in the same order: that is what lets `Last-Event-ID` resume on any replica.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.core.events import RunFinishedCancelledOutcome, RunFinishedSuccessOutcome

from prefect_beluga.core.events import END, RETRY, SKIPPED, TOKEN, TOOL_CALL, TOOL_RESULT
from prefect_beluga.server._json import jsonable

APPROVAL_PREFIX = "approve:"
#: CUSTOM event names this module emits.
RETRY_EVENT = "beluga.retry"
APPROVAL_EVENT = "approval_requested"
SIGNAL_EVENT = "signal_requested"

Source = tuple[str, "int | None"]


def _label(source: Source) -> str:
    node, index = source
    return node if index is None else f"{node}[{index}]"


def _source(detail: dict[str, Any]) -> Source:
    return str(detail.get("node", "")), detail.get("index")


class AguiMapper:
    """Turns one run's package events into AG-UI events, keeping what a UI needs to track.

    Args:
        run_id: The workflow run (also the AG-UI thread: one run, one conversation thread).
        workflow_id: Named in state snapshots.
    """

    def __init__(self, run_id: str, workflow_id: str) -> None:
        self.run_id = run_id
        self.workflow_id = workflow_id
        self._messages = 0
        self._open: dict[Source, str] = {}  # source -> its open text message
        self._since_tool: dict[Source, list[str]] = {}  # messages since the source's last tool event
        self._attempt_messages: dict[Source, list[str]] = {}  # messages of the source's current attempt
        self._nodes: dict[str, str] = {}  # label -> running | retrying | done | skipped
        self._pending_calls: dict[str, list[dict[str, Any]]] = {}  # tool -> calls without a result yet
        self.finished = False

    # -- the stream -----------------------------------------------------------------------------

    def start(self) -> list[BaseEvent]:
        return [RunStartedEvent(thread_id=self.run_id, run_id=self.run_id), self._snapshot()]

    def feed(self, update: dict[str, Any]) -> list[BaseEvent]:
        """The AG-UI events of one package stream event (unknown shapes give none)."""
        if TOKEN in update:
            return self._token(update[TOKEN])
        if TOOL_CALL in update:
            return self._tool_call(update[TOOL_CALL])
        if TOOL_RESULT in update:
            return self._tool_result(update[TOOL_RESULT])
        if RETRY in update:
            return self._retry(update[RETRY])
        if END in update:
            return self.finish(update[END])
        if SKIPPED in update:
            for node in update[SKIPPED] or ():
                self._nodes[str(node)] = "skipped"
            return [self._snapshot()]
        events: list[BaseEvent] = []
        for step in update:  # {step: output}: a step or graph node finished (in-process streams)
            label = str(step)
            events += self._close((label, None))
            self._nodes[label] = "done"
            events.append(StepFinishedEvent(step_name=label))
        if events:
            events.append(self._snapshot())
        return events

    def finish(self, result: Any) -> list[BaseEvent]:
        events = self._close_all()
        self._nodes = {label: ("skipped" if status == "skipped" else "done") for label, status in self._nodes.items()}
        self.finished = True
        return [*events, self._snapshot(), RunFinishedEvent(
            thread_id=self.run_id, run_id=self.run_id, result=jsonable(result), outcome=RunFinishedSuccessOutcome()
        )]

    def failed(self, message: str) -> list[BaseEvent]:
        self.finished = True
        return [*self._close_all(), RunErrorEvent(message=message, code="WORKFLOW_FAILED")]

    def cancelled(self, message: str) -> list[BaseEvent]:
        self.finished = True
        return [*self._close_all(), RunFinishedEvent(
            thread_id=self.run_id, run_id=self.run_id, outcome=RunFinishedCancelledOutcome(),
            metadata={"message": message},
        )]

    # -- waits (from the run's state, not from the stream: see `_stream`) ------------------------

    def waiting(self, signal: str, key: str) -> BaseEvent:
        """The run is paused waiting for `signal` (its pause key `key`): an approval request for
        `approve:<tool>` (naming the tool call, once the stream has shown it), else a signal request.

        The value has the fields of an AG-UI `Interrupt` (`id`, `reason`, `message`,
        `tool_call_id`, `response_schema`) plus `signal`, `tool` and `arguments`.
        """
        value: dict[str, Any] = {"id": key, "signal": signal}
        if signal.startswith(APPROVAL_PREFIX):
            tool = signal[len(APPROVAL_PREFIX):]
            call = self.pending_call(tool)
            value.update(
                reason="tool_approval",
                tool=tool,
                tool_call_id=call["id"] if call else None,
                arguments=call["arguments"] if call else None,
                message=f"Approve the call to {tool!r}?",
                response_schema={
                    "type": "object",
                    "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
                    "required": ["approved"],
                },
            )
            return CustomEvent(name=APPROVAL_EVENT, value=value)
        value.update(reason="signal", message=f"The run waits for the signal {signal!r}.")
        return CustomEvent(name=SIGNAL_EVENT, value=value)

    def pending_call(self, tool: str) -> dict[str, Any] | None:
        """The earliest call of `tool` the stream showed without its result yet (approvals of one
        tool are consumed in the order its calls wait)."""
        calls = self._pending_calls.get(tool)
        return calls[0] if calls else None

    # -- mapping ---------------------------------------------------------------------------------

    def _token(self, token: dict[str, Any]) -> list[BaseEvent]:
        text = str(token.get("text", ""))
        source = _source(token)
        events = self._node_seen(source)
        if not text:
            return events
        message_id = self._open.get(source)
        if message_id is None:
            self._messages += 1
            message_id = self._open[source] = f"msg-{self._messages}"
            self._since_tool.setdefault(source, []).append(message_id)
            self._attempt_messages.setdefault(source, []).append(message_id)
            events.append(TextMessageStartEvent(message_id=message_id, role="assistant", name=_label(source)))
        events.append(TextMessageContentEvent(message_id=message_id, delta=text))
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[BaseEvent]:
        source = _source(call)
        events = self._node_seen(source)
        parent = self._open.get(source) or (self._since_tool.get(source) or [None])[-1]
        events += self._close(source)
        self._since_tool[source] = []
        call_id, tool, arguments = str(call.get("id", "")), str(call.get("tool", "")), call.get("arguments")
        self._pending_calls.setdefault(tool, []).append({"id": call_id, "arguments": arguments})
        args = arguments if isinstance(arguments, str) else json.dumps(jsonable(arguments))
        events.append(ToolCallStartEvent(tool_call_id=call_id, tool_call_name=tool, parent_message_id=parent,
                                         metadata={"node": _label(source)}))
        if args:
            events.append(ToolCallArgsEvent(tool_call_id=call_id, delta=args))
        events.append(ToolCallEndEvent(tool_call_id=call_id))
        return events

    def _tool_result(self, result: dict[str, Any]) -> list[BaseEvent]:
        source = _source(result)
        events = self._close(source)
        self._since_tool[source] = []
        call_id, tool = str(result.get("id", "")), str(result.get("tool", ""))
        calls = self._pending_calls.get(tool, [])
        self._pending_calls[tool] = [c for c in calls if c["id"] != call_id]
        events.append(ToolCallResultEvent(
            message_id=f"tool-{call_id}", tool_call_id=call_id, content=str(result.get("content", "")), role="tool",
            metadata={"ok": bool(result.get("ok", True)), "tool": tool, "node": _label(source)},
        ))
        return events

    def _retry(self, retry: dict[str, Any]) -> list[BaseEvent]:
        source = _source(retry)
        events = self._close(source)
        if retry.get("substep") is not None:
            void = self._since_tool.get(source, [])
        else:  # the whole step again: every message of its attempt is void
            void = self._attempt_messages.get(source, [])
            self._attempt_messages[source] = []
        self._since_tool[source] = []
        self._nodes[_label(source)] = "retrying"
        value = {"node": source[0], "attempt": retry.get("attempt"), "void_message_ids": list(void)}
        if source[1] is not None:
            value["index"] = source[1]
        if retry.get("substep") is not None:
            value["substep"] = retry["substep"]
        return [*events, CustomEvent(name=RETRY_EVENT, value=value), self._snapshot()]

    def _node_seen(self, source: Source) -> list[BaseEvent]:
        label = _label(source)
        status = self._nodes.get(label)
        if status == "running":
            return []
        self._nodes[label] = "running"
        return ([] if status == "retrying" else [StepStartedEvent(step_name=label)]) + [self._snapshot()]

    def _close(self, source: Source) -> list[BaseEvent]:
        message_id = self._open.pop(source, None)
        return [] if message_id is None else [TextMessageEndEvent(message_id=message_id)]

    def _close_all(self) -> list[BaseEvent]:
        events: list[BaseEvent] = []
        for source in list(self._open):
            events += self._close(source)
        return events

    def _snapshot(self) -> StateSnapshotEvent:
        return StateSnapshotEvent(snapshot={
            "workflow_id": self.workflow_id, "run_id": self.run_id, "nodes": dict(self._nodes),
        })


def encode(event: BaseEvent) -> str:
    """An AG-UI event as the JSON its SSE `data:` carries (camelCase, unset fields left out)."""
    return event.model_dump_json(by_alias=True, exclude_none=True)


def event_types(events: Iterable[BaseEvent]) -> list[str]:
    return [event.type.value for event in events]


__all__ = ["APPROVAL_EVENT", "RETRY_EVENT", "SIGNAL_EVENT", "AguiMapper", "encode"]
