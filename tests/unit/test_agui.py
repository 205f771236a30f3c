"""The AG-UI mapping (prefect_beluga/server/_agui.py): each package stream event -> AG-UI events.

Every event the mapper emits is validated against the `ag-ui-protocol` package's own `Event`
union after a JSON round trip (what the SSE `data:` carries), so a field the protocol does not
know, or a missing one, fails here.
"""

from __future__ import annotations

import json

import pydantic
import pytest
from ag_ui.core import Event

from prefect_beluga.server._agui import APPROVAL_EVENT, RETRY_EVENT, SIGNAL_EVENT, AguiMapper, encode

AGUI = pydantic.TypeAdapter(Event)


def wire(events) -> list[dict]:
    """The events as a client reads them: encoded, parsed, validated as AG-UI events."""
    out = []
    for event in events:
        data = json.loads(encode(event))
        AGUI.validate_python(data)
        out.append(data)
    return out


def types(events) -> list[str]:
    return [e["type"] for e in wire(events)]


@pytest.fixture
def mapper() -> AguiMapper:
    return AguiMapper("run-1", "support")


def test_the_stream_opens_with_run_started_and_a_snapshot(mapper):
    started, snapshot = wire(mapper.start())
    assert started == {"type": "RUN_STARTED", "threadId": "run-1", "runId": "run-1"}
    assert snapshot == {"type": "STATE_SNAPSHOT",
                        "snapshot": {"workflow_id": "support", "run_id": "run-1", "nodes": {}}}


def test_tokens_open_one_message_per_node_and_append_to_it(mapper):
    first = wire(mapper.feed({"__token__": {"node": "agent", "text": "Hel"}}))
    assert [e["type"] for e in first] == [
        "STEP_STARTED", "STATE_SNAPSHOT", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
    assert first[0]["stepName"] == "agent" and first[1]["snapshot"]["nodes"] == {"agent": "running"}
    assert first[2] == {"type": "TEXT_MESSAGE_START", "messageId": "msg-1", "role": "assistant", "name": "agent"}
    assert first[3] == {"type": "TEXT_MESSAGE_CONTENT", "messageId": "msg-1", "delta": "Hel"}
    assert wire(mapper.feed({"__token__": {"node": "agent", "text": "lo"}})) == [
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "msg-1", "delta": "lo"}]
    assert mapper.feed({"__token__": {"node": "agent", "text": ""}}) == []  # an empty chunk: nothing
    # another node at once (parallel graph nodes, Map items by index): a message of its own
    other = wire(mapper.feed({"__token__": {"node": "map", "index": 2, "text": "x"}}))
    assert [e["type"] for e in other][-2:] == ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
    assert other[0]["stepName"] == "map[2]" and other[-1]["messageId"] == "msg-2"


def test_a_tool_call_ends_the_nodes_message_and_its_result_follows(mapper):
    mapper.feed({"__token__": {"node": "agent", "text": "Let me look."}})
    call = wire(mapper.feed({"__tool_call__": {"node": "agent", "tool": "lookup", "id": "c1",
                                               "arguments": {"order": "A1"}}}))
    assert [e["type"] for e in call] == ["TEXT_MESSAGE_END", "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
    assert call[0]["messageId"] == "msg-1"
    assert call[1] == {"type": "TOOL_CALL_START", "toolCallId": "c1", "toolCallName": "lookup",
                       "parentMessageId": "msg-1", "metadata": {"node": "agent"}}
    assert json.loads(call[2]["delta"]) == {"order": "A1"} and call[3]["toolCallId"] == "c1"
    assert mapper.pending_call("lookup") == {"id": "c1", "arguments": {"order": "A1"}}
    [result] = wire(mapper.feed({"__tool_result__": {"node": "agent", "tool": "lookup", "id": "c1",
                                                     "ok": False, "content": "Error: no such order"}}))
    assert result == {"type": "TOOL_CALL_RESULT", "messageId": "tool-c1", "toolCallId": "c1",
                      "content": "Error: no such order", "role": "tool",
                      "metadata": {"ok": False, "tool": "lookup", "node": "agent"}}
    assert mapper.pending_call("lookup") is None
    # the text after a tool result is a new message; arguments already JSON text are sent as they are
    assert wire(mapper.feed({"__token__": {"node": "agent", "text": "Found"}}))[0]["messageId"] == "msg-2"
    call = wire(mapper.feed({"__tool_call__": {"node": "agent", "tool": "t", "id": "c2", "arguments": '{"a": 1}'}}))
    assert [e for e in call if e["type"] == "TOOL_CALL_ARGS"][0]["delta"] == '{"a": 1}'


def test_a_retry_voids_the_attempts_messages(mapper):
    mapper.feed({"__token__": {"node": "write", "text": "draft one"}})
    events = wire(mapper.feed({"__retry__": {"node": "write", "attempt": 2}}))
    assert [e["type"] for e in events] == ["TEXT_MESSAGE_END", "CUSTOM", "STATE_SNAPSHOT"]
    assert events[1] == {"type": "CUSTOM", "name": RETRY_EVENT,
                         "value": {"node": "write", "attempt": 2, "void_message_ids": ["msg-1"]}}
    assert events[2]["snapshot"]["nodes"] == {"write": "retrying"}
    # the new attempt: no second STEP_STARTED, a new message
    again = wire(mapper.feed({"__token__": {"node": "write", "text": "draft two"}}))
    assert [e["type"] for e in again] == ["STATE_SNAPSHOT", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
    # a sub-step's retry (a model turn again) voids only what followed the last tool event
    mapper.feed({"__tool_call__": {"node": "write", "tool": "t", "id": "c", "arguments": {}}})
    mapper.feed({"__token__": {"node": "write", "text": "after the tool"}})
    [_, retry, _] = wire(mapper.feed({"__retry__": {"node": "write", "attempt": 2, "substep": "openai:gpt"}}))
    assert retry["value"] == {"node": "write", "attempt": 2, "void_message_ids": ["msg-3"], "substep": "openai:gpt"}


def test_steps_finish_and_skipped_nodes_show_in_the_snapshot(mapper):
    mapper.feed({"__token__": {"node": "a", "text": "x"}})
    events = wire(mapper.feed({"a": {"out": 1}, "b": {"out": 2}}))
    assert [e["type"] for e in events] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "STEP_FINISHED", "STATE_SNAPSHOT"]
    assert events[-1]["snapshot"]["nodes"] == {"a": "done", "b": "done"}
    [snapshot] = wire(mapper.feed({"__skipped__": ["c"]}))
    assert snapshot["snapshot"]["nodes"] == {"a": "done", "b": "done", "c": "skipped"}
    assert mapper.feed({}) == []  # an unknown shape: nothing


def test_the_end_closes_open_messages_then_run_finished_with_the_result(mapper):
    mapper.feed({"__token__": {"node": "a", "text": "x"}})
    mapper.feed({"__skipped__": ["c"]})
    events = wire(mapper.feed({"__end__": {"output": "done", "n": 1}}))
    assert [e["type"] for e in events] == ["TEXT_MESSAGE_END", "STATE_SNAPSHOT", "RUN_FINISHED"]
    assert events[1]["snapshot"]["nodes"] == {"a": "done", "c": "skipped"}
    assert events[2] == {"type": "RUN_FINISHED", "threadId": "run-1", "runId": "run-1",
                         "result": {"output": "done", "n": 1}, "outcome": {"type": "success"}}
    assert mapper.finished


def test_failed_and_cancelled_runs(mapper):
    mapper.feed({"__token__": {"node": "a", "text": "x"}})
    end, error = wire(mapper.failed("the step 'a' failed: boom"))
    assert end["type"] == "TEXT_MESSAGE_END"
    assert error == {"type": "RUN_ERROR", "message": "the step 'a' failed: boom", "code": "WORKFLOW_FAILED"}
    [cancelled] = wire(AguiMapper("run-2", "w").cancelled("cancelled by the user"))
    assert cancelled == {"type": "RUN_FINISHED", "threadId": "run-2", "runId": "run-2",
                         "outcome": {"type": "cancelled"}, "metadata": {"message": "cancelled by the user"}}


def test_waits_are_approval_requests_naming_the_call_or_signal_requests(mapper):
    mapper.feed({"__tool_call__": {"node": "agent", "tool": "refund", "id": "c9", "arguments": {"order": "A1"}}})
    [approval] = wire([mapper.waiting("approve:refund", "pause-1")])
    assert approval["name"] == APPROVAL_EVENT
    value = approval["value"]
    assert (value["id"], value["signal"], value["reason"], value["tool"]) == (
        "pause-1", "approve:refund", "tool_approval", "refund")
    assert value["tool_call_id"] == "c9" and value["arguments"] == {"order": "A1"}
    assert value["response_schema"]["required"] == ["approved"]
    # an approval whose call the stream has not shown: no call named
    [early] = wire([mapper.waiting("approve:other", "pause-2")])
    assert early["value"]["tool_call_id"] is None and early["value"]["tool"] == "other"
    [signal] = wire([mapper.waiting("go", "pause-3")])
    assert signal["name"] == SIGNAL_EVENT
    assert signal["value"] == {"id": "pause-3", "signal": "go", "reason": "signal",
                               "message": "The run waits for the signal 'go'."}


def test_the_mapping_is_a_function_of_the_events_fed_in():
    """Two replicas reading one run produce the same AG-UI events (what Last-Event-ID relies on)."""
    stream = [{"__token__": {"node": "a", "text": "hi"}},
              {"__tool_call__": {"node": "a", "tool": "t", "id": "c", "arguments": {"x": 1}}},
              {"__tool_result__": {"node": "a", "tool": "t", "id": "c", "ok": True, "content": "1"}},
              {"__retry__": {"node": "a", "attempt": 2}}, {"__token__": {"node": "a", "text": "again"}},
              {"__end__": {"output": "again"}}]

    def replay() -> list[str]:
        m = AguiMapper("r", "w")
        return [encode(e) for e in m.start()] + [encode(e) for u in stream for e in m.feed(u)]

    assert replay() == replay()
