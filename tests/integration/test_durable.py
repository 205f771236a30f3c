"""Durable in any flow run: a retried user `@flow` reads back finished steps, Map items, model
turns and tool calls instead of running them again (prefect_beluga/orchestration/_durable.py).

The loopback OpenAI server counts the model requests; the steps and tools count their runs.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

from prefect import flow

from prefect_beluga import Chain, Graph, Map, llms
from prefect_beluga.agents import Agent
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.helpers import assert_key_stored_nowhere
from prefect_beluga.tools import tool

CHAT = "/v1/chat/completions"


class Flaky:
    """Steps that count their runs; `fail` fails the first `failures` times it runs."""

    def __init__(self, failures: int = 1) -> None:
        self.runs: Counter[str] = Counter()
        self.failures = failures

    def step(self, name: str):
        def run(state: dict) -> dict:
            self.runs[name] += 1
            return {name: f"{name} done", "trail": [*state.get("trail", []), name]}

        run.__name__ = name
        return run

    def fail(self, state: dict) -> dict:
        self.runs["fail"] += 1
        if self.runs["fail"] <= self.failures:
            raise RuntimeError("the first attempt fails here")
        return {"output": "+".join(state["trail"])}


def chain_of(steps: Flaky, **options) -> Chain:
    return Chain([steps.step("one"), steps.step("two"), steps.fail], name=f"durable-{uuid.uuid4().hex[:6]}",
                 **options)


def test_a_retried_flow_reads_back_the_chain_steps_and_the_agents_first_turn_and_tool_call():
    steps = Flaky()
    tool_runs: list[str] = []
    key = f"sk-durable-{uuid.uuid4().hex}"
    with OpenAIServer(api_key=key) as server:

        @tool
        def lookup(key: str) -> str:
            """Look a key up."""
            tool_runs.append(key)
            if len(tool_runs) == 1:
                server.fail_next(500)  # the model turn after this tool call fails, once
            return key.upper()

        server.reply_with({"tool_calls": [{"name": "lookup", "arguments": {"key": "a"}}]}, "found A")
        llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key=key,
                                               base_url=server.base_url))
        agent = Agent(llm, tools=[lookup], name="durable-agent")
        # the agent is a step after two others: its failure (turn 2) fails the chain and the flow
        chain = Chain([steps.step("one"), steps.step("two"), agent], name="durable-agent-chain")

        @flow(retries=1, persist_result=False)
        async def job() -> dict:
            result = await chain.ainvoke({"input": "Look a up."})
            return {"answer": result["output"], "trail": result["trail"]}

        import asyncio

        assert asyncio.run(job()) == {"answer": "found A", "trail": ["one", "two"]}
        assert steps.runs == {"one": 1, "two": 1}  # read back in attempt 2
        assert tool_runs == ["a"]  # the tool call was read back
        # turn 1 once (read back in attempt 2), turn 2 twice (the 500, then the answer)
        assert len(server.requests_to(CHAT)) == 3
    # the durable records (and everything else on the API) hold no trace of the key
    assert_key_stored_nowhere(key)


def test_a_retried_flow_does_not_run_finished_chain_steps_again():
    steps = Flaky()
    chain = chain_of(steps)

    @flow(retries=1, persist_result=False)
    async def job() -> str:
        return (await chain.ainvoke({"input": "x"}))["output"]

    import asyncio

    assert asyncio.run(job()) == "one+two"
    assert steps.runs == {"one": 1, "two": 1, "fail": 2}


def test_subflow_false_and_a_graph_and_map_items_are_durable_too():
    steps = Flaky()
    items: Counter[int] = Counter()

    def per_item(state: dict) -> dict:
        items[state["item"]] += 1
        return {"double": state["item"] * 2}

    chain = Chain([lambda state: {"items": [1, 2, 3]}, Map(per_item, over="items", name="per-item"), steps.fail],
                  name="durable-map", subflow=False)
    graph = Graph(name="durable-graph")
    graph.add_node("one", steps.step("one")).add_node("two", steps.step("two"))
    graph.add_edge("one", "two").set_entry_point("one").set_finish_point("two")

    @flow(retries=1, persist_result=False)
    async def job() -> dict:
        graphed = await graph.ainvoke({"input": "x"})
        mapped = await chain.ainvoke({"input": "x", "trail": ["m"]})
        return {"graph": graphed["trail"], "map": [o["double"] for o in mapped["per-item"]]}

    import asyncio

    assert asyncio.run(job()) == {"graph": ["one", "two"], "map": [2, 4, 6]}
    assert items == {1: 1, 2: 1, 3: 1}
    assert steps.runs == {"one": 1, "two": 1, "fail": 2}


def test_durable_false_runs_every_step_again():
    steps = Flaky()
    chain = chain_of(steps, durable=False)

    @flow(retries=1, persist_result=False)
    async def job() -> str:
        return (await chain.ainvoke({"input": "x"}))["output"]

    import asyncio

    assert asyncio.run(job()) == "one+two"
    assert steps.runs == {"one": 2, "two": 2, "fail": 2}


def test_two_flow_runs_never_share_results_and_outside_a_flow_nothing_is_kept():
    steps = Flaky(failures=0)
    chain = chain_of(steps)

    @flow(persist_result=False)
    async def job() -> str:
        return (await chain.ainvoke({"input": "x"}))["output"]

    import asyncio

    assert asyncio.run(job()) == asyncio.run(job()) == "one+two"
    assert steps.runs == {"one": 2, "two": 2, "fail": 2}
    assert chain.invoke({"input": "x"})["output"] == chain.invoke({"input": "x"})["output"]
    assert steps.runs == {"one": 4, "two": 4, "fail": 4}


def test_a_nested_user_flow_is_durable_under_the_outermost_run():
    steps = Flaky()
    chain = chain_of(steps)

    @flow(persist_result=False)
    async def inner() -> str:
        return (await chain.ainvoke({"input": "x"}))["output"]

    @flow(retries=1, persist_result=False)
    async def outer() -> str:
        return await inner()

    import asyncio

    assert asyncio.run(outer()) == "one+two"
    assert steps.runs == {"one": 1, "two": 1, "fail": 2}


# --- a SIGKILLed process, then the same plain flow run re-run in a new process ------------------

CRASH_JOB = '''
"""A user's plain @flow: a chain of two steps, an agent (two parallel tools per turn) and a step."""
import asyncio, json, os, sys
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow_async
from prefect.states import AwaitingRetry

from prefect_beluga import Chain, llms
from prefect_beluga.agents import Agent
from prefect_beluga.tools import tool

base_url, marks, mode, id_file = sys.argv[1:5]


def mark(line: str) -> None:
    with open(marks, "a") as out:
        out.write(f"{line} {os.getpid()}\\n")


def one(state: dict) -> dict:
    mark("one")
    return {"one": "done"}


def two(state: dict) -> dict:
    mark("two")
    return {"two": "done"}


def three(state: dict) -> dict:
    mark("three")
    return {"three": "done"}


@tool
async def fast(key: str) -> str:
    """Look a key up at once."""
    mark("fast")
    return key.upper()


@tool
async def slow(key: str) -> str:
    """Look a key up slowly (the first process is killed while it runs)."""
    mark("slow-start")
    if mode == "first":
        await asyncio.sleep(600)
    mark("slow-end")
    return key.lower()


llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key="sk-crash", base_url=base_url))
chain = Chain([one, two, Agent(llm, tools=[fast, slow], name="crash-agent"), three], name="crash-chain")


@flow(name="durable-crash-job", persist_result=False)
async def job(question: str) -> dict:
    result = await chain.ainvoke({"input": question})
    return {"output": result["output"], "three": result["three"]}


async def main() -> None:
    async with get_client() as client:
        if mode == "first":
            run = await client.create_flow_run(job, parameters={"question": "Look a and B up."})
            Path(id_file).write_text(str(run.id))
        else:  # what Retry on the crashed run does: the same flow run, scheduled again
            run_id = Path(id_file).read_text()
            await client.set_flow_run_state(run_id, AwaitingRetry(), force=True)
            run = await client.read_flow_run(run_id)
    print(json.dumps(await run_flow_async(job, flow_run=run, parameters=run.parameters)), flush=True)


asyncio.run(main())
'''


def crash_replies(messages: list[dict]) -> object:
    """Turn 1 asks for the two tools at once; turn 2 answers."""
    if not any(m.get("role") == "tool" for m in messages):
        return {"tool_calls": [{"name": "fast", "arguments": {"key": "a"}},
                               {"name": "slow", "arguments": {"key": "B"}}]}
    return "A and b"


def test_a_sigkilled_plain_flow_run_re_run_in_a_new_process_reads_back_finished_steps_turns_and_tools(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH

    from prefect_beluga.testing.helpers import eventually, reaped

    script, marks, id_file = tmp_path / "crash_job.py", tmp_path / "marks.log", tmp_path / "run_id"
    script.write_text(CRASH_JOB)
    storage = Path(str(PREFECT_LOCAL_STORAGE_PATH.value()))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOCAL_STORAGE_PATH": str(storage),
           "PREFECT_LOGGING_LEVEL": "WARNING"}

    def lines(name: str) -> list[str]:
        return [line for line in (marks.read_text().splitlines() if marks.exists() else []) if line.split()[0] == name]

    def records() -> list[Path]:
        """The run's records written in full (a file exists before its bytes are written: a
        process killed in between leaves a record that cannot be read, and its step runs again)."""
        from prefect.results import ResultRecord

        def complete(path: Path) -> bool:
            try:
                ResultRecord.deserialize(path.read_bytes())
                return True
            except Exception:
                return False

        found = storage.glob(f"beluga-run-{id_file.read_text()}-*") if id_file.exists() else []
        return [path for path in found if complete(path)]

    with OpenAIServer(api_key="sk-crash", responder=crash_replies) as server:
        argv = [sys.executable, str(script), server.base_url, str(marks)]
        first = subprocess.Popen([*argv, "first", str(id_file)], env=env, stdout=subprocess.PIPE,
                                 stderr=open(tmp_path / "first.err", "w"), text=True)
        with reaped(first):
            # killed with steps one and two, model turn 1 and the fast tool call finished and
            # recorded, the slow tool call running
            eventually(lambda: lines("slow-start") and lines("fast") and len(records()) >= 4,
                       "the first process to finish turn 1 and the fast tool", timeout=120, interval=0.05,
                       process=first)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert first.returncode == -signal.SIGKILL
        assert len(server.requests_to(CHAT)) == 1
        second = subprocess.run([*argv, "again", str(id_file)], env=env, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stderr[-3000:]
        assert json.loads(second.stdout.strip().splitlines()[-1]) == {"output": "A and b", "three": "done"}
        # turn 1 read back in the new process: only turn 2 was sent there
        assert len(server.requests_to(CHAT)) == 2
    pids = {name: [line.split()[1] for line in lines(name)] for name in ("one", "two", "fast", "slow-start",
                                                                           "slow-end", "three")}
    assert pids["one"] == pids["two"] == pids["fast"] == [str(first.pid)]  # never run again
    assert len(pids["slow-start"]) == 2 and pids["slow-end"] == pids["three"] == [pids["slow-start"][1]]
    assert pids["slow-start"][1] != str(first.pid)
