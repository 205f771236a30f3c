"""Cross-run cache: value keys, hits across processes, misses on any change, no key in storage.

Model calls are counted at the loopback OpenAI server (requests it received), nothing patched.
Every test uses its own result storage directory (`PREFECT_LOCAL_STORAGE_PATH`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from prefect_beluga import Chain, Graph
from prefect_beluga.core.runnable import Runnable
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.orchestration._cache import UncacheableInputWarning
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.helpers import base64_forms, read_flow_run, read_task_runs

CHAT = "/v1/chat/completions"
SECRET = "sk-beluga-cache-secret-0123456789abcdef"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "results"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: path}):
        yield path


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


def model(server: OpenAIServer, **changes: object) -> OpenAIChatModel:
    options = {"model_name": "gpt-4o-mini", "api_key": SECRET, "base_url": server.base_url, "temperature": 0.0}
    options.update(changes)
    return OpenAIChatModel(Config(provider="openai", **options))


def calls(server: OpenAIServer) -> int:
    return len(server.requests_to(CHAT))


async def test_second_call_is_a_cached_hit_read_from_the_api(server, storage, run_name):
    chain = Chain([model(server)], name="cache-hit", cache=True)
    first = await chain.ainvoke({"input": "What is Prefect?"})
    second = await chain.ainvoke({"input": "What is Prefect?"}, {"run_name": run_name})
    assert calls(server) == 1
    assert second["output"] == first["output"] == "Echo: What is Prefect?"
    flow_run = await read_flow_run(run_name)
    [task_run] = await read_task_runs(flow_run.id, expected=1)
    assert task_run.state.name == "Cached"
    assert task_run.state.is_completed()


async def test_hit_in_another_process_sharing_the_storage(server, storage):
    question = f"shared question {uuid.uuid4().hex[:6]}"
    script = textwrap.dedent(f"""
        from prefect_beluga import Chain
        from prefect_beluga.llms.config import Config
        from prefect_beluga.llms.openai import OpenAIChatModel
        llm = OpenAIChatModel(Config(provider="openai", model_name="gpt-4o-mini", api_key={SECRET!r},
                                     base_url={server.base_url!r}, temperature=0.0))
        chain = Chain([llm], name="cache-xproc", cache=True)
        print("OUTPUT=" + chain.invoke({{"input": {question!r}}})["output"])
    """)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOCAL_STORAGE_PATH": str(storage)}

    def run_child() -> str:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    assert f"OUTPUT=Echo: {question}" in await asyncio.to_thread(run_child)
    assert calls(server) == 1
    # this process: the same chain, the same question -> the child's stored output
    llm = model(server)
    result = await Chain([llm], name="cache-xproc", cache=True).ainvoke({"input": question})
    assert result["output"] == f"Echo: {question}"
    assert calls(server) == 1
    # and a second child hits too
    assert f"OUTPUT=Echo: {question}" in await asyncio.to_thread(run_child)
    assert calls(server) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"question": "another question"},
        {"model_name": "gpt-4o"},
        {"temperature": 0.7},
        {"max_tokens": 50},
        {"options": {"top_p": 0.5}},
        {"options": {"seed": 2}},
        {"api_key": SECRET + "-other"},
        {"base_url": "second server"},
    ],
    ids=lambda change: next(iter(change)) + ("" if "options" not in change else str(change["options"])),
)
async def test_any_change_is_a_miss(server, storage, change):
    base = model(server, options={"seed": 1})
    await Chain([base], name="cache-miss", cache=True).ainvoke({"input": "same question"})
    assert calls(server) == 1
    change = dict(change)
    question = change.pop("question", "same question")
    with OpenAIServer() as other:
        if change.get("base_url") == "second server":
            change["base_url"] = other.base_url
        variant = model(server, **{"options": {"seed": 1}, **change})
        await Chain([variant], name="cache-miss", cache=True).ainvoke({"input": question})
        assert calls(server) + calls(other) == 2
        # the variant is now cached under its own key; the original still hits
        await Chain([variant], name="cache-miss", cache=True).ainvoke({"input": question})
        await Chain([base], name="cache-miss", cache=True).ainvoke({"input": "same question"})
        assert calls(server) + calls(other) == 2


class LLMStep(Runnable):
    """The tutorial's own step holding a chat model: no cache_key, so the fallback fingerprint."""

    def __init__(self, llm: OpenAIChatModel, prefix: str) -> None:
        self.llm, self.prefix, self.name = llm, prefix, "llm-step"

    async def ainvoke(self, input, config=None):
        reply = await self.llm.agenerate(self.prefix + input["input"])
        return {"output": reply.content}


async def test_a_users_step_holding_a_model_misses_when_the_model_changes(server, storage):
    async def run(step: LLMStep) -> None:
        await Chain([step], name="cache-user-step", cache=True).ainvoke({"input": "hi"})

    await run(LLMStep(model(server), "Q: "))
    await run(LLMStep(model(server), "Q: "))  # a new but equal object: hit
    assert calls(server) == 1
    await run(LLMStep(model(server, temperature=0.9), "Q: "))
    assert calls(server) == 2
    await run(LLMStep(model(server, api_key=SECRET + "x"), "Q: "))
    assert calls(server) == 3
    await run(LLMStep(model(server), "Question: "))
    assert calls(server) == 4


async def test_expired_entries_run_again(server, storage):
    chain = Chain([model(server)], name="cache-expiry", cache=True, cache_expiration=timedelta(seconds=1))
    await chain.ainvoke({"input": "expiring"})
    await chain.ainvoke({"input": "expiring"})
    assert calls(server) == 1
    time.sleep(1.5)
    await chain.ainvoke({"input": "expiring"})
    assert calls(server) == 2


async def test_the_api_key_is_not_in_storage(server, storage):
    chain = Chain([model(server)], name="cache-secret", cache=True)
    await chain.ainvoke({"input": "keep my key out"})
    await chain.ainvoke({"input": "keep my key out"})
    assert calls(server) == 1
    files = [p for p in storage.rglob("*") if p.is_file()]
    assert files, "nothing was persisted"
    secret = SECRET.encode()
    encodings = [secret, *base64_forms(secret)]
    encodings += [base64.urlsafe_b64encode(secret)[:-4]]
    for path in files:
        content = path.read_bytes()
        for needle in encodings:
            assert needle not in content, f"{path.name} holds the API key ({needle[:8]!r}...)"
        assert SECRET not in path.name


async def test_an_input_without_canonical_json_warns_once_and_runs(storage):
    ran: list[str] = []

    def step(state: dict) -> dict:
        ran.append(state["input"])
        return {"output": "done"}

    chain = Chain([step], name="cache-nojson", cache=True)
    with pytest.warns(UncacheableInputWarning, match="'step' of chain 'cache-nojson'"):
        await chain.ainvoke({"input": "a", "blob": object()})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncacheableInputWarning)
        await chain.ainvoke({"input": "b", "blob": object()})
    assert ran == ["a", "b"]


async def test_concurrent_identical_calls_leave_a_sound_store(server, storage):
    chain = Chain([model(server)], name="cache-concurrent", cache=True)
    results = await chain.abatch([{"input": "together"}] * 6)
    assert {r["output"] for r in results} == {"Echo: together"}
    made = calls(server)
    assert 1 <= made <= 6
    again = await chain.ainvoke({"input": "together"})
    assert again["output"] == "Echo: together"
    assert calls(server) == made


async def test_a_cached_node_in_a_graph_keeps_its_edge(storage, run_name):
    ran: list[str] = []

    def first(state: dict) -> dict:
        ran.append("first")
        return {"question": state["input"].upper()}

    def second(state: dict) -> dict:
        ran.append("second")
        return {"output": f"answer to {state['question']}"}

    graph = Graph(name="cache-graph")
    graph.add_node("first", first).add_node("second", second, cache=True)
    graph.add_edge("first", "second").set_entry_point("first").set_finish_point("second")
    await graph.ainvoke({"input": "edge"})
    result = await graph.ainvoke({"input": "edge"}, {"run_name": run_name})
    assert result["output"] == "answer to EDGE"
    assert ran == ["first", "second", "first"]
    flow_run = await read_flow_run(run_name)
    runs = {r.name: r for r in await read_task_runs(flow_run.id, expected=2)}
    assert runs["second"].state.name == "Cached"
    upstream = [i.id for i in runs["second"].task_inputs.get("upstream", [])]
    assert runs["first"].id in upstream


def test_a_cached_step_inside_a_workflow_uses_the_cross_run_key(server, storage):
    from prefect_beluga import Orchestrator

    chain = Chain([model(server)], name="cache-in-workflow", cache=True)
    workflow = Orchestrator().create_workflow(chain, workflow_id="cache-in-workflow")
    for _ in range(2):
        workflow_id, run_id = workflow.execute({"input": "durable and cached"})
        assert workflow.get_result(workflow_id, run_id, timeout=120)["output"] == "Echo: durable and cached"
    assert calls(server) == 1
    # the workflow's stored output serves a plain call of the same chain too
    assert chain.invoke({"input": "durable and cached"})["output"] == "Echo: durable and cached"
    assert calls(server) == 1
