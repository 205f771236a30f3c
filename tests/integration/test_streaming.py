"""Live token streaming: `astream(..., tokens=True)` on chains and graphs (docs/streaming.md).

The chat model talks to the loopback OpenAI server over HTTP with the official SDK; the server
records when it wrote each chunk (`server.chunks`), which is compared with when the caller got
it — liveness is measured against the server's own clock, not an absolute threshold.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import pytest

from prefect_beluga import Chain, Graph, Map
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.offline import OfflineChatModel
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.helpers import eventually

KEY = "sk-streaming-secret-0123456789"
CHUNK_DELAY = 0.1  # seconds between two chunks the server writes
QUESTION = "alpha beta gamma delta epsilon zeta"


class Answer(Runnable):
    """The tutorial's style of step: a sync Runnable calling `llm.generate` (a worker thread)."""

    def __init__(self, llm: Any, name: str = "answer") -> None:
        self.llm, self.name = llm, name

    def invoke(self, input: dict[str, Any], config: Any = None) -> dict[str, Any]:
        reply = self.llm.generate(input["input"])
        return {self.name: reply.content, f"{self.name}_tokens": reply.usage.completion_tokens}


class AsyncAnswer(Answer):
    """The same, async: `await llm.agenerate(...)`."""

    async def ainvoke(self, input: dict[str, Any], config: Any = None) -> dict[str, Any]:
        reply = await self.llm.agenerate(input["input"])
        return {self.name: reply.content, f"{self.name}_tokens": reply.usage.completion_tokens}


@pytest.fixture
def server():
    with OpenAIServer(api_key=KEY, chunk_delay=CHUNK_DELAY) as running:
        yield running


@pytest.fixture
def llm(server: OpenAIServer) -> OpenAIChatModel:
    return OpenAIChatModel(Config(api_key=KEY, base_url=server.base_url))


async def collect(stream) -> list[tuple[float, dict[str, Any]]]:
    return [(time.perf_counter(), event) async for event in stream]


def tokens_of(events, node: str | None = None) -> list[str]:
    return [
        e["__token__"]["text"]
        for _, e in events
        if "__token__" in e and (node is None or e["__token__"]["node"] == node)
    ]


async def test_tokens_reach_the_caller_live_from_a_sync_step(server, llm):
    chain = Chain([Answer(llm)], name="live")
    events = await collect(chain.astream({"input": QUESTION}, tokens=True))

    received = [(t, e["__token__"]) for t, e in events if "__token__" in e]
    written = server.chunks
    assert [tok["text"] for _, tok in received] == [text for _, text in written]
    assert {tok["node"] for _, tok in received} == {"answer"}
    # Live: the first token reached the caller before the server wrote its last chunk ...
    assert received[0][0] < written[-1][0]
    # ... and each chunk arrived soon after the server wrote it (well under the inter-chunk gap).
    lags = [got - sent for (got, _), (sent, _) in zip(received, written, strict=True)]
    assert statistics.median(lags) < CHUNK_DELAY / 2, lags

    result = events[-1][1]["__end__"]
    assert "".join(tokens_of(events)) == result["answer"] == f"Echo: {QUESTION}"
    assert result["answer_tokens"] > 0  # usage counted from the stream's usage chunk
    body = server.requests_to("/v1/chat/completions")[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # The step's update comes after its tokens, then the end.
    assert list(events[-2][1]) == ["answer"]


async def test_without_tokens_requests_are_plain_and_nothing_changes(server, llm):
    chain = Chain([AsyncAnswer(llm)], name="plain")
    events = [event async for event in chain.astream({"input": QUESTION})]
    assert [list(e) for e in events] == [["answer"], ["__end__"]]
    assert "stream" not in server.requests_to("/v1/chat/completions")[0].body
    assert await chain.ainvoke({"input": QUESTION}) == events[-1]["__end__"]


async def test_async_step_and_chat_model_step_stream(server, llm):
    llm.name = "model"
    chain = Chain([AsyncAnswer(llm, "first"), llm], name="mixed")
    events = await collect(chain.astream({"input": QUESTION}, tokens=True))
    result = events[-1][1]["__end__"]
    assert "".join(tokens_of(events, "first")) == result["first"]
    assert "".join(tokens_of(events, "model")) == result["output"]
    assert result["usage"]["completion_tokens"] > 0


def test_sync_stream_with_tokens(server, llm):
    chain = Chain([Answer(llm)], name="sync-live")
    events = list(chain.stream({"input": QUESTION}, tokens=True))
    assert "".join(e["__token__"]["text"] for e in events if "__token__" in e) == f"Echo: {QUESTION}"
    assert events[-1]["__end__"]["answer"] == f"Echo: {QUESTION}"


async def test_parallel_graph_nodes_stream_at_once_each_tagged(server, llm):
    graph = Graph(name="two-at-once")
    graph.add_node("left", Answer(llm, "left"))
    graph.add_node("right", AsyncAnswer(llm, "right"))
    graph.set_entry_point(["left", "right"])
    graph.set_finish_point(["left", "right"])
    events = await collect(graph.astream({"input": QUESTION}, tokens=True))

    nodes = [e["__token__"]["node"] for _, e in events if "__token__" in e]
    # Interleaved: each node's first token came before the other's last one.
    for one, other in (("left", "right"), ("right", "left")):
        first = nodes.index(one)
        last = len(nodes) - 1 - nodes[::-1].index(other)
        assert first < last, nodes
    result = events[-1][1]["__end__"]
    assert "".join(tokens_of(events, "left")) == result["left"]["left"] == f"Echo: {QUESTION}"
    assert "".join(tokens_of(events, "right")) == result["right"]["right"] == f"Echo: {QUESTION}"


async def test_nested_chain_inside_a_graph_node_names_the_innermost_step(server, llm):
    inner = Chain([Answer(llm, "inner_step")], name="inner")
    graph = Graph(name="outer")
    graph.add_node("outer_node", inner)
    graph.set_entry_point("outer_node")
    graph.set_finish_point("outer_node")
    events = await collect(graph.astream({"input": QUESTION}, tokens=True))
    assert {e["__token__"]["node"] for _, e in events if "__token__" in e} == {"inner_step"}
    assert "".join(tokens_of(events)) == events[-1][1]["__end__"]["inner_step"]


async def test_a_stream_failing_midway_is_retried_with_a_retry_event_and_a_fresh_stream(server, llm):
    server.break_stream_next(after=2)
    chain = Chain([Answer(llm)], name="flaky", retries=1)
    events = [e for _, e in await collect(chain.astream({"input": QUESTION}, tokens=True))]

    kinds = [next(iter(e)) for e in events]
    retry_at = kinds.index("__retry__")
    assert events[retry_at]["__retry__"] == {"node": "answer", "attempt": 2}
    before = [e["__token__"]["text"] for e in events[:retry_at] if "__token__" in e]
    after = [e["__token__"]["text"] for e in events[retry_at:] if "__token__" in e]
    assert before == ["Echo:", " alpha"]  # what the broken stream had sent
    assert "".join(after) == events[-1]["__end__"]["answer"] == f"Echo: {QUESTION}"
    assert len(server.requests_to("/v1/chat/completions")) == 2


async def test_no_api_key_in_any_event(server, llm):
    server.break_stream_next(after=1)
    chain = Chain([Answer(llm)], name="secret", retries=1)
    events = [e for _, e in await collect(chain.astream({"input": QUESTION}, tokens=True))]
    assert KEY not in repr(events)
    assert any("__retry__" in e for e in events)


async def test_the_offline_model_streams_word_by_word():
    chain = Chain([OfflineChatModel()], name="offline")
    state = {"input": "What does Pinecone store?", "system": "Prefect schedules flows. Pinecone stores vectors."}
    events = [e async for e in chain.astream(state, tokens=True)]
    texts = [e["__token__"]["text"] for e in events if "__token__" in e]
    assert len(texts) > 3
    assert "".join(texts) == events[-1]["__end__"]["output"] == "[offline model] Pinecone stores vectors."


# -- Map: each item's events carry its index ---------------------------------------------------------

QUESTIONS = [
    "Prefect schedules flows. What does Prefect schedule?",
    "Pinecone stores vectors in an index. What does Pinecone store?",
    "Dask runs tasks on a cluster. What does Dask run?",
]


class FlakyAnswer(AsyncAnswer):
    """`AsyncAnswer` that fails once on the Map item `fail_index`, after streaming its reply."""

    def __init__(self, llm: Any, name: str, fail_index: int) -> None:
        super().__init__(llm, name)
        self.fail_index, self.failed = fail_index, False

    async def ainvoke(self, input: dict[str, Any], config: Any = None) -> dict[str, Any]:
        output = await super().ainvoke(input, config)
        if input["index"] == self.fail_index and not self.failed:
            self.failed = True
            raise RuntimeError(f"flaky item {self.fail_index}")
        return output


def texts_by_source(events: list[dict[str, Any]]) -> dict[tuple[str, int | None], str]:
    """The text streamed by each (node, Map item index), index None for an ordinary step."""
    texts: dict[tuple[str, int | None], str] = {}
    for event in events:
        if "__token__" in event:
            token = event["__token__"]
            source = (token["node"], token.get("index"))
            texts[source] = texts.get(source, "") + token["text"]
    return texts


async def test_map_items_in_a_chain_stream_tagged_with_the_step_and_their_index():
    llm = OfflineChatModel()
    chain = Chain(
        [Map(AsyncAnswer(llm, "summary"), over="questions", item_key="input", name="summarize"),
         AsyncAnswer(llm)],
        name="map-stream",
    )
    events = [e async for e in chain.astream({"input": QUESTIONS[0], "questions": QUESTIONS}, tokens=True)]
    result = events[-1]["__end__"]
    summaries = [output["summary"] for output in result["summarize"]]
    assert len(set(summaries)) == len(QUESTIONS) and all(len(s.split()) > 3 for s in summaries)
    # each item's tokens under ("summarize", its index); the ordinary step's without an index
    assert texts_by_source(events) == {
        **{("summarize", i): summary for i, summary in enumerate(summaries)},
        ("answer", None): result["answer"],
    }
    assert not any("index" in e["__token__"] for e in events if "__token__" in e and e["__token__"]["node"] == "answer")


async def test_map_items_in_a_graph_stream_tagged_with_the_node_and_their_index():
    llm = OfflineChatModel()
    graph = Graph(name="map-stream-graph")
    graph.add_node("summarize", Map(Answer(llm, "summary"), over="questions", item_key="input"))  # sync: threads
    graph.add_node("answer", AsyncAnswer(llm))
    graph.add_edge("summarize", "answer").set_entry_point("summarize").set_finish_point("answer")
    events = [e async for e in graph.astream({"input": QUESTIONS[1], "questions": QUESTIONS}, tokens=True)]
    result = events[-1]["__end__"]
    assert texts_by_source(events) == {
        **{("summarize", i): output["summary"] for i, output in enumerate(result["summarize"])},
        ("answer", None): result["answer"],
    }


async def test_a_chain_inside_a_map_item_tags_its_own_step_with_the_items_index():
    inner = Chain([AsyncAnswer(OfflineChatModel(), "summary")], name="inner")
    chain = Chain([Map(inner, over="questions", item_key="input", name="summarize")], name="map-of-chains")
    events = [e async for e in chain.astream({"questions": QUESTIONS}, tokens=True)]
    outputs = events[-1]["__end__"]["summarize"]
    assert texts_by_source(events) == {("summary", i): output["summary"] for i, output in enumerate(outputs)}


async def test_a_flaky_map_item_announces_its_retry_with_its_index_only():
    chain = Chain(
        [Map(FlakyAnswer(OfflineChatModel(), "summary", fail_index=1), over="questions", item_key="input",
             name="summarize")],
        name="map-flaky-stream", retries=1,
    )
    events = [e async for e in chain.astream({"questions": QUESTIONS}, tokens=True)]
    summaries = [output["summary"] for output in events[-1]["__end__"]["summarize"]]

    assert [e["__retry__"] for e in events if "__retry__" in e] == [{"node": "summarize", "index": 1, "attempt": 2}]
    retry_at = next(i for i, e in enumerate(events) if "__retry__" in e)
    # item 1 streamed its reply twice, the void one before its retry; the others once
    assert texts_by_source(events[:retry_at])[("summarize", 1)] == summaries[1]
    assert texts_by_source(events[retry_at:])[("summarize", 1)] == summaries[1]
    assert texts_by_source(events) == {
        ("summarize", 0): summaries[0], ("summarize", 1): summaries[1] * 2, ("summarize", 2): summaries[2],
    }


# -- across processes: a workflow run's tokens as Prefect events ---------------------------------

WRITER = """
import sys
from prefect_beluga import Chain, Orchestrator
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.openai import OpenAIChatModel

class Answer(Runnable):
    name = "answer"
    def __init__(self, llm):
        self.llm = llm
    def invoke(self, input, config=None):
        return {"answer": self.llm.generate(input["input"]).content}

llm = OpenAIChatModel(Config(api_key=sys.argv[2], base_url=sys.argv[1]))
workflow = Orchestrator().create_workflow(Chain([Answer(llm)], name="streamed"), workflow_id="streamed-tokens")
workflow_id, run_id = workflow.execute({"input": sys.argv[3]}, stream=True)
print(run_id, flush=True)
workflow.get_result(workflow_id, run_id, timeout=300)  # not drain(): it can return before the run starts
"""


async def test_a_workflow_run_streams_to_a_reader_in_another_process(prefect_server, tmp_path):
    import subprocess
    import sys

    from prefect.client.orchestration import get_client

    from prefect_beluga import Orchestrator

    words = " ".join(f"w{i}" for i in range(30))
    with OpenAIServer(api_key=KEY, chunk_delay=0.05) as server:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, server.base_url, KEY, words],
            env=prefect_server.env, stdout=subprocess.PIPE, stderr=open(tmp_path / "writer.log", "wb"), text=True,
        )
        try:
            run_id = writer.stdout.readline().strip()
            assert run_id, (tmp_path / "writer.log").read_text()[-3000:]
            # The reader starts after the run began streaming ...
            eventually(lambda: len(server.chunks) >= 5, "5 chunks", timeout=120, interval=0.05, raises=False)
            if len(server.chunks) < 5:  # say where the run is, for the failure message
                with prefect_server.settings():
                    probe = Orchestrator().create_workflow(lambda state: state, workflow_id="streamed-tokens")
                    status = await probe.astatus(run_id)
                pytest.fail(f"run {run_id} did not stream within 120 s: status {status}, writer alive: "
                            f"{writer.poll() is None}, log: {(tmp_path / 'writer.log').read_text()[-3000:]}")
            with prefect_server.settings():
                reader = Orchestrator().create_workflow(lambda state: state, workflow_id="streamed-tokens")
                events = await collect(reader.astream(run_id))
                async with get_client() as client:  # every event the run published, as stored
                    body = {"filter": {"resource": {"id": [f"prefect-beluga.workflow-run.{run_id}"]}}, "limit": 50}
                    stored = (await client.request("POST", "/events/filter", json=body)).text
        finally:
            writer.wait(timeout=120)
        written = server.chunks
    # ... and still gets every token from the start, in order, once, then the end.
    texts = tokens_of(events)
    assert "".join(texts) == events[-1][1]["__end__"]["answer"] == f"Echo: {words}"
    assert texts[0].startswith("Echo:")
    assert [list(e) for _, e in events[:-1]] == [["__token__"]] * len(texts)
    assert len(texts) < len(written)  # coalesced: fewer events than chunks
    assert KEY not in repr(events)
    assert "prefect-beluga.tokens" in stored and KEY not in stored
    # Live: the last chunks reached this process after the server wrote them. The bound is loose on
    # purpose (a loaded CI machine); the measured lag is in benchmarks/streaming.py.
    last_received = events[-2][0]
    assert 0 <= last_received - written[-1][0] < 15.0


async def events_of_a_finished_run(prefect_server, workflow_id: str, script: str, *args: str) -> list[dict[str, Any]]:
    """Run the writer `script` (which starts a streamed run of `workflow_id` on the server, prints
    its run id and waits for its end) in another process, then read every event of the run back."""
    import subprocess
    import sys

    from prefect_beluga import Orchestrator

    writer = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=prefect_server.env, capture_output=True, text=True, timeout=300,
    )
    assert writer.returncode == 0, writer.stderr[-3000:]
    run_id = writer.stdout.split()[0]
    with prefect_server.settings():  # the run is over: the reader reads every event back
        reader = Orchestrator().create_workflow(lambda state: state, workflow_id=workflow_id)
        return [event for _, event in await collect(reader.astream(run_id))]


AGENT_WRITER = """
import sys
from prefect_beluga import Chain, Orchestrator
from prefect_beluga.agents import Agent
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.tools import tool

@tool
def add(a: int, b: int = 0) -> int:
    \"\"\"Add two integers.\"\"\"
    return a + b

agent = Agent(OpenAIChatModel(Config(api_key=sys.argv[2], base_url=sys.argv[1])), tools=[add], name="adder")
workflow = Orchestrator().create_workflow(Chain([agent], name="agent-streamed"), workflow_id="agent-streamed")
workflow_id, run_id = workflow.execute({"input": "Add 2 and 40."}, stream=True)
print(run_id, flush=True)
workflow.get_result(workflow_id, run_id, timeout=300)
"""


async def test_an_agent_workflow_streams_its_tool_calls_to_another_process(prefect_server):
    with OpenAIServer(api_key=KEY) as server:
        server.reply_with({"tool_calls": [{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 40}}]},
                          "It is 42.")
        events = await events_of_a_finished_run(prefect_server, "agent-streamed", AGENT_WRITER, server.base_url, KEY)
    kinds = [next(iter(event)) for event in events]
    assert [e["__tool_call__"] for e in events if "__tool_call__" in e] == [
        {"node": "adder", "tool": "add", "id": "call_1", "arguments": {"a": 2, "b": 40}}
    ]
    assert [e["__tool_result__"] for e in events if "__tool_result__" in e] == [
        {"node": "adder", "tool": "add", "id": "call_1", "ok": True, "content": "42"}
    ]
    final = kinds.index("__tool_result__")
    assert "".join(tokens_of([(0, e) for e in events[final:]])) == "It is 42."
    assert kinds.index("__tool_call__") < final and kinds[-1] == "__end__"
    assert events[-1]["__end__"]["output"] == "It is 42."
    assert KEY not in repr(events)


MAP_WRITER = """
import json, sys
from prefect_beluga import Chain, Map, Orchestrator
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.llms.offline import OfflineChatModel

class Summary(Runnable):
    name = "summary"
    async def ainvoke(self, input, config=None):
        return {"summary": (await OfflineChatModel().agenerate(input["input"])).content}

chain = Chain([Map(Summary(), over="questions", item_key="input", name="summarize")], name="map-streamed")
workflow = Orchestrator().create_workflow(chain, workflow_id="map-streamed")
workflow_id, run_id = workflow.execute({"questions": json.loads(sys.argv[1])}, stream=True)
print(run_id, flush=True)
workflow.get_result(workflow_id, run_id, timeout=300)
"""


async def test_a_workflow_map_streams_each_items_tokens_with_its_index_to_another_process(prefect_server):
    import json

    events = await events_of_a_finished_run(prefect_server, "map-streamed", MAP_WRITER, json.dumps(QUESTIONS))
    outputs = events[-1]["__end__"]["summarize"]
    assert len(outputs) == len(QUESTIONS)
    # the items' text was coalesced per item on the way, never merged across items
    assert texts_by_source(events) == {("summarize", i): output["summary"] for i, output in enumerate(outputs)}


async def test_the_rag_generation_step_streams(server, llm):
    from prefect_beluga.rag.steps import GenerationStep

    chain = Chain([GenerationStep(llm)], name="rag-generate")
    events = [e async for e in chain.astream({"input": QUESTION, "documents": []}, tokens=True)]
    texts = [e["__token__"]["text"] for e in events if "__token__" in e]
    assert {e["__token__"]["node"] for e in events if "__token__" in e} == {"generate"}
    assert len(texts) > 3 and "".join(texts) == events[-1]["__end__"]["output"] == f"Echo: {QUESTION}"
    assert events[-1]["__end__"]["usage"]["completion_tokens"] > 0


async def test_a_deployed_run_on_a_worker_streams_the_same_way(prefect_server, tmp_path):
    import streaming_fixtures as fx
    from workflow_fixtures import start_worker

    from prefect_beluga.testing.helpers import stop_process_group

    with OpenAIServer(api_key=KEY, chunk_delay=0.02) as server, prefect_server.settings():
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate

        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="beluga-stream-pool", type="process"), overwrite=True)
        await asyncio.to_thread(fx.deployed_stream.deploy, work_pool="beluga-stream-pool")
        worker = start_worker(prefect_server, "beluga-stream-pool", "stream-worker", tmp_path,
                              BELUGA_TEST_OPENAI_URL=server.base_url, BELUGA_TEST_OPENAI_KEY=KEY)
        try:
            _, run_id = await fx.deployed_stream.aexecute({"input": QUESTION}, stream=True)
            events = [e async for e in fx.deployed_stream.astream(run_id)]
        finally:
            stop_process_group(worker)
    log = (tmp_path / "stream-worker.log").read_text(errors="replace")[-3000:]
    texts = [e["__token__"]["text"] for e in events if "__token__" in e]
    assert len(texts) >= 1, log
    assert "".join(texts) == events[-1]["__end__"]["answer"] == f"Echo: {QUESTION}", log
    assert server.requests_to("/v1/chat/completions")[0].body["stream"] is True
