"""A caller that stops reading a stream cancels the run, it does not crash it (docs/streaming.md,
"Leaving a stream early").

Leaving a chain's or graph's `stream` / `astream` early — `break`, `aclose()`, the generator
garbage-collected, the task iterating it cancelled — ends the flow run and the step in flight
Cancelled (Prefect's CANCELLED state, with a message saying the caller stopped reading), cuts
the model request in flight (the loopback OpenAI server stops writing: its writes fail once the
client has closed the connection), and prints no "Task was destroyed" or Crashed line. A
workflow's stream is only a reader: leaving it leaves the run alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_beluga import Chain, Graph, Map, Orchestrator
from prefect_beluga.agents import Agent
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.orchestration._stream import STOPPED_READING
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.helpers import read_flow_run, read_subflow_runs, read_task_runs
from prefect_beluga.tools import tool

KEY = "sk-disconnect-0123456789"
CHUNK_DELAY = 0.2  # seconds between two chunks the server writes
WORDS = 24  # a reply of 25 chunks: ~5 s to stream in full, far longer than any test waits
QUESTION = " ".join(f"w{i}" for i in range(WORDS))
FULL_REPLY = f"Echo: {QUESTION}"


class Answer(Runnable):
    """The tutorial's style of step: a sync Runnable calling `llm.generate` (a worker thread)."""

    def __init__(self, llm: Any, name: str = "answer") -> None:
        self.llm, self.name = llm, name

    def invoke(self, input: dict[str, Any], config: Any = None) -> dict[str, Any]:
        return {self.name: self.llm.generate(input["input"]).content}


class AsyncAnswer(Answer):
    async def ainvoke(self, input: dict[str, Any], config: Any = None) -> dict[str, Any]:
        return {self.name: (await self.llm.agenerate(input["input"])).content}


def first_step(state: dict[str, Any]) -> dict[str, Any]:
    return {"first": "done"}


@pytest.fixture
def server():
    with OpenAIServer(api_key=KEY, chunk_delay=CHUNK_DELAY) as running:
        yield running


@pytest.fixture
def llm(server: OpenAIServer) -> OpenAIChatModel:
    return OpenAIChatModel(Config(api_key=KEY, base_url=server.base_url))


@pytest.fixture
def quiet(capfd, caplog):
    """Asserts, after the test, that nothing said a run crashed or a task was left pending."""
    caplog.set_level("DEBUG", logger="asyncio")
    yield
    gc.collect()  # a pending task left behind is reported when it is collected
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text):
        for bad in ("Task was destroyed", "Crash", "Crashed", "Traceback"):
            assert bad not in text, text[-3000:]


def assert_server_stopped_writing(server: OpenAIServer) -> None:
    """The model request was cut: the server's writes failed (the client closed the
    connection) and it wrote no more chunks, long before the reply's end."""
    time.sleep(3 * CHUNK_DELAY)
    written = len(server.chunks)
    time.sleep(3 * CHUNK_DELAY)
    assert len(server.chunks) == written < WORDS // 2, (written, WORDS)


async def task_states(flow_run: FlowRun, expected: int) -> dict[str, tuple[StateType, str | None]]:
    runs = await read_task_runs(flow_run.id, expected)
    return {run.name: (run.state_type, run.state.message) for run in runs}


async def assert_cancelled(name: str, *, done: tuple[str, ...] = (), cancelled: tuple[str, ...] = ()) -> FlowRun:
    """The flow run `name` and the task runs `cancelled` ended Cancelled by the caller's leaving,
    those in `done` Completed; no other task run."""
    run = await read_flow_run(name)
    assert (run.state_type, run.state.message) == (StateType.CANCELLED, STOPPED_READING)
    states = await task_states(run, len(done) + len(cancelled))
    expected = {n: (StateType.COMPLETED, None) for n in done}
    expected.update({n: (StateType.CANCELLED, STOPPED_READING) for n in cancelled})
    assert {n: (t, m if t == StateType.CANCELLED else None) for n, (t, m) in states.items()} == expected
    return run


def test_breaking_out_of_a_sync_stream_cancels_the_run_and_the_model_request(server, llm, run_name, quiet):
    chain = Chain([Answer(llm)], name="leave-sync")
    events = []
    for event in chain.stream({"input": QUESTION}, {"run_name": run_name}, tokens=True):
        events.append(event)
        break
    assert "__token__" in events[0]
    assert_server_stopped_writing(server)
    asyncio.run(assert_cancelled(run_name, cancelled=("answer",)))


async def test_returning_from_astream_after_the_first_token_cancels_the_run(server, llm, run_name, quiet):
    chain = Chain([AsyncAnswer(llm)], name="leave-return")

    async def first_token() -> str:  # a chat UI whose user closed the tab
        async for event in chain.astream({"input": QUESTION}, {"run_name": run_name}, tokens=True):
            if "__token__" in event:
                return event["__token__"]["text"]
        raise AssertionError("no token")

    assert await first_token() == "Echo:"
    await assert_cancelled(run_name, cancelled=("answer",))
    assert_server_stopped_writing(server)


async def test_aclose_cancels_the_step_in_flight_and_returns_once_the_run_ended(server, llm, run_name, quiet):
    chain = Chain([first_step, AsyncAnswer(llm)], name="leave-aclose")
    events = chain.astream({"input": QUESTION}, {"run_name": run_name}, tokens=True)
    while "__token__" not in await events.__anext__():
        pass
    await events.aclose()
    async with get_client() as client:  # already final: aclose waited for the run to end
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])))
    assert [r.state_type for r in runs] == [StateType.CANCELLED]
    await assert_cancelled(run_name, done=("first_step",), cancelled=("answer",))
    assert_server_stopped_writing(server)


async def test_leaving_between_steps_cancels_the_next_step_without_a_crash(server, llm, run_name, quiet):
    # No tokens: the first event is step 1's output, while the chain goes on to step 2.
    chain = Chain([first_step, AsyncAnswer(llm)], name="leave-between")
    async for event in chain.astream({"input": QUESTION}, {"run_name": run_name}):
        assert list(event) == ["first_step"]
        break
    gc.collect()  # the generator, left behind by `break`, is closed by its event loop
    run = await read_flow_run(run_name)
    assert (run.state_type, run.state.message) == (StateType.CANCELLED, STOPPED_READING)
    states = await task_states(run, 1)
    assert states.pop("first_step")[0] == StateType.COMPLETED
    # The second step was cancelled in flight, or never started.
    assert all(state == (StateType.CANCELLED, STOPPED_READING) for state in states.values()), states


async def test_a_garbage_collected_stream_cancels_the_run(server, llm, run_name, quiet):
    chain = Chain([AsyncAnswer(llm)], name="leave-gc")
    events = chain.astream({"input": QUESTION}, {"run_name": run_name}, tokens=True)
    while "__token__" not in await events.__anext__():
        pass
    del events
    gc.collect()
    await assert_cancelled(run_name, cancelled=("answer",))
    assert_server_stopped_writing(server)


async def test_cancelling_the_task_that_iterates_the_stream_cancels_the_run(server, llm, run_name, quiet):
    chain = Chain([Answer(llm)], name="leave-task-cancel")
    streaming = asyncio.Event()

    async def read() -> None:
        async for event in chain.astream({"input": QUESTION}, {"run_name": run_name}, tokens=True):
            if "__token__" in event:
                streaming.set()

    reader = asyncio.create_task(read())
    await asyncio.wait_for(streaming.wait(), 60)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await assert_cancelled(run_name, cancelled=("answer",))
    assert_server_stopped_writing(server)


async def test_leaving_a_graph_stream_cancels_its_parallel_nodes(server, llm, run_name, quiet):
    graph = Graph(name="leave-graph")
    graph.add_node("left", AsyncAnswer(llm, "left")).add_node("right", Answer(llm, "right"))
    graph.add_node("join", lambda state: {"joined": True})
    graph.add_edge("left", "join").add_edge("right", "join")
    graph.set_entry_point(["left", "right"]).set_finish_point("join")
    seen: set[str] = set()
    async with contextlib.aclosing(
        graph.astream({"input": QUESTION}, {"run_name": run_name}, tokens=True)
    ) as events:
        async for event in events:
            if "__token__" in event:
                seen.add(event["__token__"]["node"])
                if seen == {"left", "right"}:
                    break
    await assert_cancelled(run_name, cancelled=("left", "right"))  # "join" never started
    assert_server_stopped_writing(server)


async def test_a_chain_streamed_inside_a_users_flow_ends_cancelled_and_the_flow_goes_on(
    server, llm, run_name, quiet
):
    chain = Chain([AsyncAnswer(llm)], name="leave-inner")

    @flow(name="chat-backend", flow_run_name=run_name)
    async def backend() -> str:
        async for event in chain.astream({"input": QUESTION}, tokens=True):
            if "__token__" in event:
                break  # the user closed the tab
        return "went on"

    assert await backend() == "went on"
    outer = await read_flow_run(run_name)
    assert outer.state_type == StateType.COMPLETED
    (inner,) = await read_subflow_runs(outer.id)
    await assert_cancelled(inner.name, cancelled=("answer",))
    assert_server_stopped_writing(server)


def test_a_chain_streamed_inside_a_users_sync_flow_ends_cancelled_and_the_flow_goes_on(
    server, llm, run_name, quiet
):
    chain = Chain([Answer(llm)], name="leave-inner-sync")

    @flow(name="sync-chat-backend", flow_run_name=run_name)
    def backend() -> str:
        for event in chain.stream({"input": QUESTION}, tokens=True):
            if "__token__" in event:
                break
        return "went on"

    assert backend() == "went on"
    outer = asyncio.run(read_flow_run(run_name))
    assert outer.state_type == StateType.COMPLETED
    (inner,) = asyncio.run(read_subflow_runs(outer.id))
    asyncio.run(assert_cancelled(inner.name, cancelled=("answer",)))
    assert_server_stopped_writing(server)


def test_leaving_a_workflow_stream_leaves_the_run_running_to_completion(server, llm, quiet):
    workflow = Orchestrator().create_workflow(Chain([Answer(llm)], name="read-only"), workflow_id="test-leave-reader")
    workflow_id, run_id = workflow.execute({"input": QUESTION}, stream=True)
    for event in workflow.stream(run_id):
        assert "__token__" in event
        break
    # The reader left; the run did not notice.
    assert workflow.get_result(workflow_id, run_id, timeout=120)["answer"] == FULL_REPLY
    assert [text for _, text in server.chunks] and "".join(t for _, t in server.chunks) == FULL_REPLY
    assert workflow.status(run_id) == "COMPLETED"


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_leaving_an_agents_stream_cancels_its_model_turn_in_flight(server, llm, run_name, quiet):
    llm.name = "model"
    server.reply_with({"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, FULL_REPLY)
    chain = Chain([Agent(llm, tools=[tool(add)], name="helper")], name="leave-agent")
    async with contextlib.aclosing(chain.astream({"input": "add"}, {"run_name": run_name}, tokens=True)) as events:
        async for event in events:
            if "__token__" in event:
                break  # the answer's first token, after the tool call
    run = await read_flow_run(run_name)
    assert (run.state_type, run.state.message) == (StateType.CANCELLED, STOPPED_READING)
    runs = await read_task_runs(run.id, 4)
    assert sorted((r.name, r.state_type) for r in runs) == [
        ("add", StateType.COMPLETED),
        ("helper", StateType.CANCELLED),  # the step
        ("model", StateType.CANCELLED),  # the second model turn, in flight
        ("model", StateType.COMPLETED),  # the first one, which asked for the tool
    ]
    assert_server_stopped_writing(server)


async def test_leaving_the_stream_of_an_agent_on_its_own_cancels_its_flow_run(server, llm, run_name, quiet):
    llm.name = "model"
    server.reply_with({"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, FULL_REPLY)
    helper = Agent(llm, tools=[tool(add)], name="helper")
    async with contextlib.aclosing(helper.astream({"input": "add"}, {"run_name": run_name}, tokens=True)) as events:
        async for event in events:
            if "__token__" in event:
                break  # the answer's first token, after the tool call
    run = await read_flow_run(run_name)
    assert (run.state_type, run.state.message) == (StateType.CANCELLED, STOPPED_READING)
    runs = await read_task_runs(run.id, 3)
    assert sorted((r.name, r.state_type) for r in runs) == [
        ("add", StateType.COMPLETED),
        ("model", StateType.CANCELLED),  # the second model turn, in flight
        ("model", StateType.COMPLETED),
    ]
    assert_server_stopped_writing(server)


async def test_leaving_a_map_steps_stream_cancels_every_item_in_flight(server, llm, run_name, quiet):
    chain = Chain([Map(AsyncAnswer(llm), over="questions", item_key="input", name="answers")], name="leave-map")
    stream = chain.astream({"questions": [QUESTION, QUESTION]}, {"run_name": run_name}, tokens=True)
    async with contextlib.aclosing(stream) as events:
        indexes = set()
        async for event in events:
            if "__token__" in event:
                indexes.add(event["__token__"]["index"])
                if indexes == {0, 1}:
                    break
    await assert_cancelled(run_name, cancelled=("answers[0]", "answers[1]"))
    assert_server_stopped_writing(server)


async def test_leaving_a_graph_stream_cancels_nodes_on_a_thread_pool_task_runner(server, llm, run_name, quiet):
    graph = Graph(name="leave-thread-pool", task_runner=ThreadPoolTaskRunner(max_workers=2))
    graph.add_node("left", AsyncAnswer(llm, "left")).add_node("right", Answer(llm, "right"))
    graph.set_entry_point(["left", "right"]).set_finish_point(["left", "right"])
    async with contextlib.aclosing(graph.astream({"input": QUESTION}, {"run_name": run_name}, tokens=True)) as events:
        async for event in events:
            if "__token__" in event:
                break
    await assert_cancelled(run_name, cancelled=("left", "right"))
    assert_server_stopped_writing(server)


SCRIPT_THAT_BREAKS_AND_EXITS = """
import asyncio, sys
from prefect_beluga import Chain
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.openai import OpenAIChatModel

llm = OpenAIChatModel(Config(api_key=sys.argv[1], base_url=sys.argv[2]))
chain = Chain([llm], name="leave-and-exit")


async def main():
    async for event in chain.astream({"input": sys.argv[4]}, {"run_name": sys.argv[3]}, tokens=True):
        if "__token__" in event:
            break  # and return: asyncio.run's teardown cancels the run's task before closing the stream


asyncio.run(main())
"""


def test_a_script_that_breaks_out_and_returns_from_asyncio_run_cancels_the_run(server, run_name, tmp_path):
    """asyncio.run cancels every task left when its main returns, before it closes the
    abandoned generator: that cancel must stop the run as leaving does, not crash it."""
    import subprocess
    import sys

    import workflow_fixtures as fx

    script = tmp_path / "leave.py"
    script.write_text(SCRIPT_THAT_BREAKS_AND_EXITS)
    done = subprocess.run([sys.executable, str(script), KEY, server.base_url, run_name, QUESTION],
                          env=fx.subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for bad in ("Task was destroyed", "Crash", "Traceback"):
        assert bad not in done.stderr, done.stderr[-3000:]
    run = asyncio.run(read_flow_run(run_name))
    assert (run.state_type, run.state.message) == (StateType.CANCELLED, STOPPED_READING)
