"""The token hook of `prefect_beluga.core.streaming` (no Prefect API)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

from prefect_beluga.core.streaming import TokenSink, current_node, emit_token, token_sink


def recording_publisher(run_id: str = "run-1", **options: Any) -> Any:
    """A workflow `EventPublisher` whose `sent` list keeps `(time, event name, payload)` of every
    event it would hand to Prefect's `emit_event` (the payload as `_emit` would publish it)."""
    from prefect_beluga.orchestration.workflow._tokens import EventPublisher

    class Recording(EventPublisher):
        sent: list[tuple[float, str, dict[str, Any]]]

        def _emit(self, name: str, payload: dict[str, Any]) -> None:
            self.sent.append((time.monotonic(), name, {"attempt": self.attempt, "seq": self.seq, **payload}))
            self.seq += 1

    Recording.sent = []  # a fresh class per call: one list per publisher
    return Recording(run_id, **options)


async def test_chunks_from_a_worker_thread_reach_the_loop_in_order_tagged_with_the_innermost_node():
    got: list[tuple[dict, int]] = []
    sink = TokenSink(lambda event: got.append((event, threading.get_ident())))

    def worker() -> None:
        with current_node.set_for("outer"):
            emit_token("a")
            with current_node.set_for("inner"):
                for i in range(50):
                    emit_token(str(i))
            emit_token("b")
            emit_token("")  # empty deltas are dropped

    with sink.active():
        assert token_sink() is sink
        await asyncio.to_thread(contextvars.copy_context().run, worker)
    await asyncio.sleep(0)  # let the loop run the handed-over callbacks
    assert token_sink() is None
    texts = [(e["__token__"]["node"], e["__token__"]["text"]) for e, _ in got]
    assert texts == [("outer", "a"), *[("inner", str(i)) for i in range(50)], ("outer", "b")]
    assert {thread for _, thread in got} == {threading.get_ident()}  # delivered on the loop


def test_without_a_sink_nothing_happens_and_retry_events_are_tagged():
    emit_token("lost")  # no sink: a no-op
    got: list[dict] = []
    sink = TokenSink(got.append)  # no running loop: delivered directly
    sink.retry("answer", 2)
    with sink.active():
        emit_token("x", default_node="model")
    assert got == [{"__retry__": {"node": "answer", "attempt": 2}}, {"__token__": {"node": "model", "text": "x"}}]


def test_a_workflow_publisher_coalesces_each_node_to_about_ten_events_a_second():
    from prefect_beluga.orchestration.workflow._tokens import END_EVENT, TOKENS_EVENT

    publisher = recording_publisher()
    sent = publisher.sent
    started = time.monotonic()
    for i in range(300):
        for node in ("left", "right"):
            publisher.deliver({"__token__": {"node": node, "text": f"{i} "}})
        time.sleep(0.002)
    publisher.deliver({"__retry__": {"node": "left", "attempt": 2}})
    publisher.close()
    elapsed = time.monotonic() - started

    assert [s[2]["seq"] for s in sent] == list(range(len(sent)))
    assert sent[-1][1] == END_EVENT
    for node in ("left", "right"):
        events = [s for s in sent if s[1] == TOKENS_EVENT and s[2]["node"] == node]
        assert "".join(e[2]["text"] for e in events) == "".join(f"{i} " for i in range(300))
        assert len(events) <= elapsed / publisher.interval + 3  # ~10 a second at most
        gaps = [events[i + 1][0] - events[i][0] for i in range(len(events) - 2)]  # not the closing flush
        assert all(g >= publisher.interval * 0.9 for g in gaps), gaps
    retry_at = next(i for i, s in enumerate(sent) if s[1] == "prefect-beluga.retry")
    assert sent[retry_at - 1][2]["node"] == "left"  # the node's pending text went first


def test_a_retry_event_crosses_processes_with_the_run_attempt_kept_apart():
    from prefect_beluga.orchestration.workflow._tokens import _as_update

    publisher = recording_publisher(attempt=3)
    publisher.deliver({"__retry__": {"node": "agent", "attempt": 2, "substep": "gpt-4o-mini"}})
    publisher.deliver({"__retry__": {"node": "summarize", "attempt": 4}})
    publisher.close()
    retries = [payload for _, name, payload in publisher.sent if name == "prefect-beluga.retry"]
    assert [p["attempt"] for p in retries] == [3, 3]  # the run's: events are ordered by it
    assert [_as_update("prefect-beluga.retry", p) for p in retries] == [
        {"__retry__": {"node": "agent", "attempt": 2, "substep": "gpt-4o-mini"}},
        {"__retry__": {"node": "summarize", "attempt": 4}},
    ]


def test_tool_events_are_tagged_like_tokens_and_cross_processes_after_their_nodes_text():
    from prefect_beluga.core.streaming import emit_tool_call, emit_tool_result
    from prefect_beluga.orchestration.workflow._tokens import _as_update

    emit_tool_call("add", "call_1", {"a": 1})  # no sink: a no-op
    got: list[dict] = []
    with TokenSink(got.append).active(), current_node.set_for("research"):
        emit_tool_call("add", "call_1", {"a": 1}, default_node="agent")
        emit_tool_result("add", "call_1", "1", ok=True, default_node="agent")
    assert got == [
        {"__tool_call__": {"node": "research", "tool": "add", "id": "call_1", "arguments": {"a": 1}}},
        {"__tool_result__": {"node": "research", "tool": "add", "id": "call_1", "ok": True, "content": "1"}},
    ]

    publisher = recording_publisher(interval=60)
    publisher.deliver({"__token__": {"node": "research", "text": "Let me add."}})
    for event in got:
        publisher.deliver(event)
    publisher.close()
    assert [name for _, name, _ in publisher.sent] == [
        "prefect-beluga.tokens", "prefect-beluga.tool-call", "prefect-beluga.tool-result", "prefect-beluga.tokens-end"
    ]
    assert [_as_update(name, payload) for _, name, payload in publisher.sent[1:3]] == got


def test_a_map_items_events_carry_its_index_and_cross_processes_coalesced_apart():
    from prefect_beluga.core.streaming import current_item, emit_tool_call
    from prefect_beluga.orchestration.workflow._tokens import TOKENS_EVENT, _as_update

    got: list[dict] = []
    with TokenSink(got.append).active(), current_node.set_for("summarize"):
        emit_token("step")
        with current_item.set_for(1):
            emit_token("item")
            emit_tool_call("add", "call_1", {"a": 1}, default_node="agent")
    assert got == [
        {"__token__": {"node": "summarize", "text": "step"}},
        {"__token__": {"node": "summarize", "index": 1, "text": "item"}},
        {"__tool_call__": {"node": "summarize", "index": 1, "tool": "add", "id": "call_1", "arguments": {"a": 1}}},
    ]

    publisher = recording_publisher(interval=60)
    for i in range(3):
        for index in (0, 1):
            publisher.deliver({"__token__": {"node": "summarize", "index": index, "text": f"{index}.{i} "}})
    publisher.deliver({"__retry__": {"node": "summarize", "index": 1, "attempt": 2}})
    publisher.close()
    updates = [_as_update(name, payload) for _, name, payload in publisher.sent]
    for index in (0, 1):  # two items of one node: each item's text is its own
        texts = [u["__token__"]["text"] for u in updates if u and "__token__" in u and u["__token__"]["index"] == index]
        assert "".join(texts) == f"{index}.0 {index}.1 {index}.2 "
    assert sum(name == TOKENS_EVENT for _, name, _ in publisher.sent) <= 4  # still coalesced
    assert {"__retry__": {"node": "summarize", "index": 1, "attempt": 2}} in updates
