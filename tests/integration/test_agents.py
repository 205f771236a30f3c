"""Agents: the tool-calling loop as Prefect task runs, errors that go
back to the model, the iteration limit, structured output, agents as chain steps and graph nodes,
and agents in workflows (durable tool calls after a SIGKILL, approval signals, no key anywhere).

The model is the loopback OpenAI server (`prefect_beluga.testing.OpenAIServer`) with scripted
replies, spoken to by the official SDK; the offline model drives a tool call with no server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pydantic
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.context import FlowRunContext
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOCAL_STORAGE_PATH,
)

from prefect_beluga import (
    AgentIterationLimit,
    Chain,
    Graph,
    Orchestrator,
    RunConfig,
    ValidationError,
    llms,
)
from prefect_beluga.agents import Agent, AgentOutputError
from prefect_beluga.core._substeps import InlineSubsteps, use_substeps
from prefect_beluga.schema import AIMessage, HumanMessage, ToolMessage
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.helpers import aeventually, assert_key_stored_nowhere, eventually, reaped, task_runs
from prefect_beluga.tools import tool

TESTS = Path(__file__).parent


def chat_model(server: OpenAIServer, key: str = "sk-test") -> llms.OpenAIChatModel:
    return llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key=key, base_url=server.base_url))


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


@tool
def add(a: int, b: int = 0) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number,
            zero when not given.
    """
    return a + b


# -- agent arguments -------------------------------------------------------------------------------


def test_bad_agents_are_clear_errors():
    with pytest.raises(ValidationError, match="tools\\[0\\] and tools\\[1\\] are both named 'add'"):
        Agent(llms.OfflineChatModel(), tools=[add, add])
    with pytest.raises(ValidationError, match="llm must be a chat model"):
        Agent("gpt-4o-mini", tools=[add])
    with pytest.raises(ValidationError, match="max_iterations must be an int >= 1"):
        Agent(llms.OfflineChatModel(), tools=[add], max_iterations=0)
    with pytest.raises(ValidationError, match="output_type must be a pydantic model class"):
        Agent(llms.OfflineChatModel(), output_type=dict)
    with pytest.raises(ValidationError, match="expects {'input': str} or {'messages'"):
        Agent(llms.OfflineChatModel()).invoke(42)


def test_a_runnable_is_a_tool_too():
    """A chain as a tool runs as a flow: here, not in tests/unit/test_tools.py."""
    chain = Chain([lambda s: {"output": s["input"][::-1]}], name="reverse")
    reverse = tool(chain, name="reverse", description="Reverse a text.")
    assert reverse.parameters["required"] == ["input"]
    with use_substeps(InlineSubsteps()):
        assert asyncio.run(reverse.acall(reverse.parse_arguments('{"input": "abc"}')))["output"] == "cba"


# -- the loop --------------------------------------------------------------------------------------


def test_loop_sends_tool_schemas_and_results_with_call_ids(openai_server):
    openai_server.reply_with(
        {"tool_calls": [{"id": "call_1", **call("add", a=2, b=40)}]},
        "2 + 40 = 42.",
    )
    agent = Agent(chat_model(openai_server), tools=[add], system_prompt="Use the tools.", name="adder")
    run_name = f"adder-{uuid.uuid4().hex[:8]}"
    result = agent.invoke("What is 2 + 40?", RunConfig(run_name=run_name, tags=["agents"]))
    assert result["output"] == "2 + 40 = 42."
    # on its own, the agent is one flow run named after it, its calls task runs of that run
    flow_run, runs = asyncio.run(flow_run_and_task_runs(run_name, expected=3))
    assert flow_run.state_type.value == "COMPLETED" and "agents" in flow_run.tags
    assert [r.name for r in sorted(runs, key=lambda r: r.start_time)] == [
        "openai:gpt-4o-mini", "add", "openai:gpt-4o-mini"
    ]
    first, second = openai_server.requests_to("/v1/chat/completions")
    assert first.body["tools"] == [add.to_openai()]
    assert first.body["messages"][0] == {"role": "system", "content": "Use the tools."}
    assert second.body["messages"][2]["tool_calls"][0]["id"] == "call_1"
    assert openai_server.tool_results() == [
        {"role": "tool", "content": "42", "name": "add", "tool_call_id": "call_1"}
    ]
    kinds = [type(m) for m in result["messages"]]
    assert kinds[1:] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    # the conversation goes on from the returned messages
    openai_server.reply_with("Still 42.")
    again = agent.invoke({"messages": [*result["messages"], HumanMessage("Sure?")]})
    assert again["output"] == "Still 42." and len(again["messages"]) == len(result["messages"]) + 2
    assert sum(m["role"] == "system" for m in openai_server.requests[-1].body["messages"]) == 1


def test_tool_calls_of_one_turn_run_concurrently_as_task_runs(openai_server):
    # Each call waits (up to 30 s) until all three have started: they only all see the other two
    # if they ran at the same time, whatever the machine's load (no timing threshold).
    started: set[str] = set()
    saw_all: dict[str, bool] = {}

    @tool
    async def fetch(page: str) -> str:
        """Fetch a page."""
        started.add(page)
        await aeventually(lambda: len(started) >= 3, "all three calls", timeout=30, interval=0.01, raises=False)
        saw_all[page] = len(started) == 3
        return f"contents of {page}"

    @tool
    def measure(page: str) -> int:
        """Measure a page (a sync tool: runs in a worker thread)."""
        started.add("measure:" + page)
        eventually(lambda: len(started) >= 3, "all three calls", timeout=30, interval=0.01, raises=False)
        saw_all["measure:" + page] = len(started) == 3
        return len(page)

    openai_server.reply_with(
        {"tool_calls": [call("fetch", page="a"), call("fetch", page="b"), call("measure", page="c")]},
        "done",
    )
    agent = Agent(chat_model(openai_server), tools=[fetch, measure], name="reader")

    @flow(name="agent-host")
    async def host():
        output = await agent.ainvoke("Read a, b and c.")
        return FlowRunContext.get().flow_run.id, output

    flow_run_id, result = asyncio.run(host())
    assert result["output"] == "done"
    assert saw_all == {"a": True, "b": True, "measure:c": True}, f"tool calls did not overlap: {saw_all}"
    runs = asyncio.run(task_runs(flow_run_id, expected=5))
    names = sorted(run.name for run in runs)
    assert names == sorted(["fetch", "fetch", "measure", "openai:gpt-4o-mini", "openai:gpt-4o-mini"])
    assert all(run.state_type.value == "COMPLETED" for run in runs)

    # bounded: max_concurrency=1 runs them one after the other
    spans: dict[str, tuple[float, float]] = {}

    @tool(name="fetch")
    async def fetch_slowly(page: str) -> str:
        """Fetch a page."""
        begun = time.monotonic()
        await asyncio.sleep(0.2)
        spans[page] = (begun, time.monotonic())
        return f"contents of {page}"

    openai_server.reply_with({"tool_calls": [call("fetch", page="x"), call("fetch", page="y")]}, "ok")
    serial = Agent(chat_model(openai_server), tools=[fetch_slowly], max_concurrency=1)
    assert serial.invoke("Read x and y.")["output"] == "ok"
    (_, first_end), (second_start, _) = sorted(spans.values())
    assert first_end <= second_start


def test_errors_and_bad_arguments_go_back_to_the_model_and_the_loop_goes_on(openai_server):
    attempts: list[int] = []

    @tool(retries=1)
    def flaky(x: int) -> int:
        """Fails every time."""
        attempts.append(x)
        raise ConnectionError(f"backend down for {x}")

    openai_server.reply_with(
        {"tool_calls": [
            call("flaky", x=1),
            call("add", a="one"),
            call("nonexistent"),
            {"name": "add", "arguments": "{not json"},
        ]},
        "I could not compute it.",
    )
    agent = Agent(chat_model(openai_server), tools=[flaky, add], name="careful")

    @flow(name="agent-host")
    async def host():
        output = await agent.ainvoke("Compute.")
        return FlowRunContext.get().flow_run.id, output

    flow_run_id, result = asyncio.run(host())
    assert result["output"] == "I could not compute it."
    assert attempts == [1, 1]  # the tool's retry policy: one retry, as a Prefect task retry
    sent = [m["content"] for m in openai_server.tool_results()]
    assert sent[0] == "Error: tool 'flaky' failed: ConnectionError: backend down for 1"
    assert "field 'a': Input should be a valid integer" in sent[1] and "Fix the arguments" in sent[1]
    assert sent[2] == "Error: there is no tool named 'nonexistent'. Available tools: flaky, add."
    assert "not valid JSON" in sent[3]
    runs = asyncio.run(task_runs(flow_run_id, expected=3))
    [flaky_run] = [r for r in runs if r.name == "flaky"]
    assert flaky_run.state_type.value == "FAILED" and flaky_run.run_count == 2
    assert [r.name for r in runs].count("add") == 0  # bad arguments never start a task run


def test_a_tool_timeout_is_its_task_timeout(openai_server):
    @tool(timeout=0.3)
    async def sleepy() -> str:
        """Sleeps too long."""
        await asyncio.sleep(5)
        return "late"

    openai_server.reply_with({"tool_calls": [call("sleepy")]}, "gave up")
    result = Agent(chat_model(openai_server), tools=[sleepy]).invoke("Go.")
    assert result["output"] == "gave up"
    assert openai_server.tool_results()[0]["content"].startswith("Error: tool 'sleepy' timed out")


def test_iteration_limit_names_the_limit(openai_server):
    openai_server.responder = lambda messages: {"tool_calls": [call("add", a=1)]}
    agent = Agent(chat_model(openai_server), tools=[add], max_iterations=3, name="looper")
    with pytest.raises(AgentIterationLimit, match=r"agent 'looper' reached max_iterations=3.*last: add") as info:
        agent.invoke("Loop forever.")
    assert info.value.max_iterations == 3
    assert len(openai_server.requests_to("/v1/chat/completions")) == 3


class Weather(pydantic.BaseModel):
    city: str
    celsius: float


def test_structured_output_is_parsed_into_the_output_type(openai_server):
    openai_server.reply_with('```json\n{"city": "Oslo", "celsius": -3.5}\n```')
    result = Agent(chat_model(openai_server), output_type=Weather).invoke("Weather in Oslo?")
    assert result["output"] == Weather(city="Oslo", celsius=-3.5)
    fmt = openai_server.requests[-1].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["schema"]["required"] == ["city", "celsius"]


def test_invalid_structured_output_gets_one_corrective_turn_then_a_clear_error(openai_server):
    openai_server.reply_with('{"city": "Oslo"}', '{"city": "Oslo", "celsius": 2}')
    agent = Agent(chat_model(openai_server), output_type=Weather)
    assert agent.invoke("Weather?")["output"].celsius == 2
    correction = openai_server.requests[-1].body["messages"][-1]
    assert correction["role"] == "user" and "field 'celsius': Field required" in correction["content"]

    openai_server.reply_with("sunny", '{"city": 3}')
    with pytest.raises(AgentOutputError, match="does not fit Weather, even after a corrective turn") as info:
        agent.invoke("Weather?")
    assert "field 'city': Input should be a valid string" in str(info.value)
    assert info.value.content == '{"city": 3}'


def test_agent_as_a_chain_step_and_as_a_graph_node(openai_server):
    openai_server.responder = lambda messages: (
        {"tool_calls": [call("add", a=len(messages), b=1)]} if messages[-1]["role"] == "user" else "answered"
    )
    agent = Agent(chat_model(openai_server), tools=[add], name="helper")
    chain = Chain([lambda s: {"input": s["input"] + "?"}, agent], name="agent-chain")
    result = chain.invoke({"input": "Add"})
    assert result["output"] == "answered" and result["input"] == "Add?"

    graph = Graph(name="agent-graph")
    graph.add_node("ask", agent)
    graph.add_node("shout", lambda s: {"loud": s["output"].upper()})
    graph.add_edge("ask", "shout")
    graph.set_entry_point(["ask"])
    graph.set_finish_point(["shout"])
    assert graph.invoke({"input": "Add one"})["loud"] == "ANSWERED"
    assert len(openai_server.tool_results()) == 1


def test_offline_model_drives_a_deterministic_tool_call():
    asked: list[str] = []

    @tool
    def search_docs(query: str) -> str:
        """Search the documentation about Prefect."""
        asked.append(query)
        return "Prefect retries a task run when it fails, up to its retries setting."

    agent = Agent(llms.OfflineChatModel(), tools=[add, search_docs], name="offline-agent")
    result = agent.invoke("How does Prefect retry a task?")
    assert asked == ["How does Prefect retry a task?"]
    assert result["output"] == "[offline model] Prefect retries a task run when it fails, up to its retries setting."
    assert isinstance(result["messages"][-2], ToolMessage)


def test_approval_outside_a_workflow_refuses_the_call(openai_server):
    ran = []

    @tool(requires_approval=True)
    def refund(order: str) -> str:
        """Refund an order."""
        ran.append(order)
        return "refunded"

    openai_server.reply_with({"tool_calls": [call("refund", order="A1")]}, "not refunded")
    assert Agent(chat_model(openai_server), tools=[refund]).invoke("Refund A1")["output"] == "not refunded"
    assert ran == [] and "needs approval" in openai_server.tool_results()[0]["content"]


# -- in workflows ----------------------------------------------------------------------------------
# Module-level so a child process (`import test_agents`) builds the same workflow.


def log_line(line: str) -> None:
    with open(Path(os.environ["BELUGA_AGENT_TEST_DIR"]) / "tools.log", "a") as f:
        f.write(f"{line} {os.getpid()}\n")


@tool
def quick(item: str) -> str:
    """Finishes at once."""
    log_line(f"quick:{item}")
    return f"quick {item}"


@tool
def gated(item: str) -> str:
    """Waits for the gate file (the first attempt waits to be killed)."""
    log_line(f"gated:{item}")
    gate = Path(os.environ["BELUGA_AGENT_TEST_DIR"]) / "gate"
    while not gate.exists():
        time.sleep(0.05)
    return f"gated {item}"


@tool(requires_approval=True)
def refund(order: str) -> str:
    """Refund an order."""
    log_line(f"refund:{order}")
    return f"refunded {order}"


async def agent_job(state: dict) -> dict:
    # The key comes from OPENAI_API_KEY (never from the workflow's input).
    llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", base_url=state["base_url"]))
    agent = Agent(llm, tools=[quick, gated, refund], name="job-agent")
    result = await agent.ainvoke({"input": state["input"]})
    return {"output": result["output"], "tools": [m.content for m in result["messages"] if isinstance(m, ToolMessage)]}


agent_workflow = Orchestrator().create_workflow(agent_job, workflow_id="test-agent")


def subprocess_env(directory: Path, key: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=PREFECT_API_URL.value(),
        PREFECT_LOCAL_STORAGE_PATH=str(PREFECT_LOCAL_STORAGE_PATH.value()),
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        BELUGA_AGENT_TEST_DIR=str(directory),
        OPENAI_API_KEY=key,
    )
    return env


def test_finished_tool_calls_are_durable_in_a_killed_and_retried_workflow(tmp_path, monkeypatch):
    """The child process runs the workflow; turn 1 calls `quick` and `gated` at once; it is
    SIGKILLed while `gated` waits. The retried run reads the model turn and `quick` back."""
    key = f"sk-agent-{uuid.uuid4().hex}"
    monkeypatch.setenv("BELUGA_AGENT_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", key)
    log = tmp_path / "tools.log"
    with OpenAIServer(api_key=key) as server:
        server.reply_with({"tool_calls": [call("quick", item="q"), call("gated", item="g")]}, "both done")
        code = (
            "import test_agents as t, time\n"
            f"wid, rid = t.agent_workflow.execute({{'input': 'Do both.', 'base_url': {server.base_url!r}}})\n"
            "print(rid, flush=True)\n"
            "time.sleep(600)\n"
        )
        child = subprocess.Popen(
            [sys.executable, "-c", code], env=subprocess_env(tmp_path, key), stdout=subprocess.PIPE, text=True
        )
        with reaped(child):
            run_id = child.stdout.readline().strip()
            eventually(lambda: log.exists() and "gated:g" in log.read_text() and "quick:q" in log.read_text(),
                       "both tools to start", timeout=120, interval=0.1, process=child)

            def quick_completed() -> bool:  # Completed on the API only once its result is stored
                runs = asyncio.run(task_runs(uuid.UUID(run_id), expected=1, timeout=0))
                return any(r.name == "quick" and r.state_type.value == "COMPLETED" for r in runs)

            eventually(quick_completed, "`quick` to complete", timeout=120, process=child)
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        (tmp_path / "gate").touch()
        agent_workflow.retry(run_id)
        result = agent_workflow.get_result("test-agent", run_id, timeout=120)
        assert result == {"output": "both done", "tools": ["quick q", "gated g"]}
        lines = [line.split() for line in log.read_text().splitlines()]
        # turn 1's two tools started in the child, in either order (they run at once); only
        # `gated`, unfinished when the child was killed, ran again, in this process
        assert sorted(map(tuple, lines[:2])) == [("gated:g", str(child.pid)), ("quick:q", str(child.pid))]
        assert lines[2:] == [["gated:g", str(os.getpid())]]
        # turn 1 was read back, not asked again: one request per model turn
        assert len(server.requests_to("/v1/chat/completions")) == 2
    # the key is in no parameter, task input, result, state, log or event on the API
    assert_key_stored_nowhere(key)


def test_a_tool_requiring_approval_waits_for_the_signal(tmp_path, monkeypatch):
    key = f"sk-agent-{uuid.uuid4().hex}"
    monkeypatch.setenv("BELUGA_AGENT_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with OpenAIServer(api_key=key) as server:
        server.reply_with(
            {"tool_calls": [call("refund", order="A1")]},
            {"tool_calls": [call("refund", order="B2")]},  # each call waits for its own approval
            "Refunded A1 and B2.",
        )
        workflow_id, run_id = agent_workflow.execute({"input": "Refund A1", "base_url": server.base_url})

        def wait_until_paused() -> None:
            eventually(lambda: agent_workflow.status(run_id) == "PAUSED", "the run to pause for approval")

        wait_until_paused()
        assert not (tmp_path / "tools.log").exists()  # not run before approval
        agent_workflow.signal(run_id, "approve:refund", {"approved": True, "by": "ann"})
        eventually((tmp_path / "tools.log").exists, "the approved call to run")
        wait_until_paused()  # the second call waits for a second approval
        assert (tmp_path / "tools.log").read_text().split()[0] == "refund:A1"
        agent_workflow.signal(run_id, "approve:refund", {"approved": True, "by": "ann"})
        result = agent_workflow.get_result(workflow_id, run_id, timeout=60)
    assert result == {"output": "Refunded A1 and B2.", "tools": ["refunded A1", "refunded B2"]}
    assert [line.split()[0] for line in (tmp_path / "tools.log").read_text().splitlines()] == ["refund:A1", "refund:B2"]
    assert_key_stored_nowhere(key)


# -- helpers ---------------------------------------------------------------------------------------


async def flow_run_and_task_runs(run_name: str, expected: int):
    """The flow run called `run_name`, its flow's name checked, and its final task runs."""
    async with get_client() as client:
        [flow_run] = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name={"any_": [run_name]}))
        assert (await client.read_flow(flow_run.flow_id)).name == "adder"
    return flow_run, await task_runs(flow_run.id, expected)


# -- flows/agent.py --------------------------------------------------------------------------------


async def test_agent_flow_answers_offline_with_the_store_as_a_tool(tmp_path):
    sys.path.insert(0, str(TESTS.parents[1] / "flows"))
    from agent import agent_answer
    from rag_ingest import rag_ingest

    from prefect_beluga.blocks import (
        ChatModelBlock,
        EmbeddedVectorStoreBlock,
        EmbedderBlock,
    )

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "prefect.md").write_text(
        "# Prefect\n\nPrefect runs flows made of tasks. A failed task is retried by its retry policy.\n"
    )
    (docs / "ml.md").write_text("# Machine learning\n\nMachine learning learns patterns from data.\n")
    names = {"embedder_block": f"emb-{uuid.uuid4().hex[:8]}", "vector_store_block": f"store-{uuid.uuid4().hex[:8]}"}
    await EmbedderBlock(provider="hashing").asave(names["embedder_block"])
    await EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz")).asave(names["vector_store_block"])
    chat = f"chat-{uuid.uuid4().hex[:8]}"
    await ChatModelBlock(provider="offline").asave(chat)
    await rag_ingest(str(docs), chunk_size=40, chunk_overlap=0, **names)

    result = await agent_answer("How is a failed task retried?", chat_model_block=chat, k=1, **names)
    assert result["searches"] == ["How is a failed task retried?"]
    assert len(result["sources"]) == 1 and "prefect.md" in result["sources"][0]
    assert result["output"].startswith("[offline model]") and "retried by its retry policy" in result["output"]


# -- the sub-step hook without Prefect -------------------------------------------------------------


class RecordingSubsteps(InlineSubsteps):
    """A runner of our own: records sub-steps, claims to be in a workflow, answers signals."""

    def __init__(self, payload):
        self.steps, self.signals, self.payload = [], [], payload

    async def run(self, step, fn, /, *args):
        self.steps.append(step.name)
        return await super().run(step, fn, *args)

    def in_workflow(self):
        return True

    async def wait_for_signal(self, name):
        self.signals.append(name)
        return self.payload


def test_sub_steps_go_to_the_scoped_runner_and_a_declined_approval_reaches_the_model(openai_server):
    ran = []

    @tool(requires_approval=True, name="refund")
    def refund_order(order: str) -> str:
        """Refund an order."""
        ran.append(order)
        return "refunded"

    openai_server.reply_with({"tool_calls": [call("refund", order="A1"), call("add", a=1)]}, "declined")
    runner = RecordingSubsteps({"approved": False, "reason": "over the limit"})
    with use_substeps(runner):
        result = asyncio.run(Agent(chat_model(openai_server), tools=[refund_order, add]).ainvoke("Refund A1"))
    assert result["output"] == "declined" and ran == []
    assert runner.signals == ["approve:refund"]
    assert sorted(runner.steps) == ["add", "openai:gpt-4o-mini", "openai:gpt-4o-mini"]
    assert (
        openai_server.tool_results()[0]["content"]
        == "The call to 'refund' was not approved: over the limit; it was not run."
    )


def test_inline_sub_steps_keep_retries_and_timeouts():
    from prefect_beluga.core._substeps import Substep

    attempts = []

    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("again")
        return "ok"

    async def slow():
        await asyncio.sleep(5)

    runner = InlineSubsteps()
    assert asyncio.run(runner.run(Substep("flaky", retries=2), flaky)) == "ok" and len(attempts) == 3
    with pytest.raises(TimeoutError):
        asyncio.run(runner.run(Substep("slow", timeout=0.1), slow))
    with pytest.raises(ValidationError, match="sub-step 'x': retries must be an int >= 0"):
        Substep("x", retries=-1)


def test_tool_calls_arrive_through_the_streaming_api_too(openai_server):
    openai_server.reply_with({"content": "Let me add.", "tool_calls": [{"id": "call_9", **call("add", a=1, b=2)}]})
    deltas: list[str] = []
    result = asyncio.run(
        chat_model(openai_server).agenerate("Add 1 and 2", tools=[add.to_openai()], on_token=deltas.append)
    )
    assert "".join(deltas) == "Let me add." == result.content
    [tool_call] = result.message.tool_calls
    assert (tool_call.id, tool_call.name, tool_call.arguments) == ("call_9", "add", '{"a": 1, "b": 2}')
    assert openai_server.requests[-1].body["stream"] is True
    with pytest.raises(ValidationError, match="does not support tools"):

        class Plain(llms.OfflineChatModel):
            async def _agenerate(self, messages):
                return await super()._agenerate(messages)

        Plain().generate("hi", tools=[add.to_openai()])
