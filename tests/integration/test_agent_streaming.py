"""Agents with streaming and the cross-run cache (docs/agents.md, docs/streaming.md, docs/cache.md).

Streaming: an agent step of a chain streamed with `tokens=True` streams its final answer's tokens
live (compared with when the loopback server wrote them) and shows each tool call as
`__tool_call__` / `__tool_result__` events. Caching: model requests are counted at the loopback
OpenAI server; a cached agent step re-run asks nothing, and inside a cached step each model turn
is cached by value, so a re-run after a failure pays only for the turns not answered yet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from prefect_beluga import Chain, Graph, Map, llms
from prefect_beluga.agents import Agent
from prefect_beluga.embeddings import HashingEmbedder
from prefect_beluga.orchestration import cache_hits
from prefect_beluga.rag import GenerationStep, build_rag_chain
from prefect_beluga.schema import Document, HumanMessage, SystemMessage
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.helpers import assert_key_stored_nowhere, read_flow_run, read_task_runs
from prefect_beluga.tools import tool
from prefect_beluga.vectorstores import InMemoryVectorStore

KEY = "sk-agent-stream-secret-0123456789abcdef"
CHAT = "/v1/chat/completions"
ANSWER = "The first sum is 42 and the second is 1."
MODEL = "openai:gpt-4o-mini"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, chunk_delay=0.05) as running:
        yield running


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "results"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: path}):
        yield path


ran: list[tuple[int, int]] = []  # calls of `add`, to see that tool calls are not cached


@tool
def add(a: int, b: int = 0) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    ran.append((a, b))
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def chat_model(server: OpenAIServer, **changes: Any) -> llms.OpenAIChatModel:
    options = {"model_name": "gpt-4o-mini", "api_key": KEY, "base_url": server.base_url, "temperature": 0.0}
    options.update(changes)
    return llms.OpenAIChatModel(llms.Config(provider="openai", **options))


def agent(server: OpenAIServer, tools: list = [add], **changes: Any) -> Agent:  # noqa: B006 - read only
    options = {"system_prompt": "Use the tools.", "name": "adder"}
    options.update({k: changes.pop(k) for k in list(changes) if k in ("system_prompt", "max_iterations")})
    return Agent(chat_model(server, **changes), tools=tools, **options)


def script_two_calls(server: OpenAIServer) -> None:
    server.reply_with(
        {"content": "Let me add.", "tool_calls": [
            {"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 40}},
            {"id": "call_2", "name": "add", "arguments": {"a": 1}},
        ]},
        ANSWER,
    )


def chats(server: OpenAIServer) -> int:
    return len(server.requests_to(CHAT))


# -- streaming -------------------------------------------------------------------------------------


async def test_final_answer_streams_live_and_tool_calls_show_as_events(server):
    script_two_calls(server)
    chain = Chain([agent(server)], name="agent-stream")
    events = [(time.perf_counter(), event) async for event in chain.astream({"input": "Add."}, tokens=True)]
    kinds = [next(iter(event)) for _, event in events]

    calls = [e["__tool_call__"] for _, e in events if "__tool_call__" in e]
    assert calls == [
        {"node": "adder", "tool": "add", "id": "call_1", "arguments": {"a": 2, "b": 40}},
        {"node": "adder", "tool": "add", "id": "call_2", "arguments": {"a": 1}},
    ]
    results = sorted((e["__tool_result__"]["id"], e["__tool_result__"]) for _, e in events if "__tool_result__" in e)
    assert [r for _, r in results] == [
        {"node": "adder", "tool": "add", "id": "call_1", "ok": True, "content": "42"},
        {"node": "adder", "tool": "add", "id": "call_2", "ok": True, "content": "1"},
    ]
    # in order: the first turn's text, its calls, their results, then the final answer's tokens
    last_tool = max(i for i, kind in enumerate(kinds) if kind == "__tool_result__")
    first_call = kinds.index("__tool_call__")
    assert max(i for i, kind in enumerate(kinds) if kind == "__tool_call__") < min(
        i for i, kind in enumerate(kinds) if kind == "__tool_result__"
    )
    before = [e["__token__"]["text"] for _, e in events[:first_call] if "__token__" in e]
    assert "".join(before) == "Let me add."
    final = [(t, e["__token__"]) for t, e in events[last_tool:] if "__token__" in e]
    assert {token["node"] for _, token in final} == {"adder"}
    assert len(final) > 3 and "".join(token["text"] for _, token in final) == ANSWER
    # ... each a separate event before the step's output and the end, received while the server
    # was still writing the answer (its chunks are 0.05 s apart)
    assert kinds.index("adder") > last_tool + len(final) and kinds[-1] == "__end__"
    assert events[-1][1]["__end__"]["output"] == ANSWER
    assert final[0][0] < server.chunks[-1][0]
    assert KEY not in json.dumps([e for _, e in events], default=str)

    # without tokens=True: plain requests, no tool events
    script_two_calls(server)
    plain = [event async for event in chain.astream({"input": "Add."})]
    assert [next(iter(e)) for e in plain] == ["adder", "__end__"]
    assert not any(r.body.get("stream") for r in server.requests_to(CHAT)[-2:])


async def test_an_agent_graph_node_streams_under_its_node_name(server):
    server.reply_with({"tool_calls": [{"id": "call_7", "name": "add", "arguments": {"a": 3, "b": 4}}]}, "Seven.")
    graph = Graph(name="agent-node-stream")
    graph.add_node("research", agent(server))
    graph.set_entry_point("research")
    graph.set_finish_point("research")
    events = [event async for event in graph.compile().astream({"input": "3 + 4?"}, tokens=True)]
    tool_events = [e for e in events if "__tool_call__" in e or "__tool_result__" in e]
    assert [(next(iter(e)), e[next(iter(e))]["node"], e[next(iter(e))]["id"]) for e in tool_events] == [
        ("__tool_call__", "research", "call_7"), ("__tool_result__", "research", "call_7"),
    ]
    assert "".join(e["__token__"]["text"] for e in events if "__token__" in e) == "Seven."


@tool
def look_up(query: str) -> str:
    """Look a question up in the notes."""
    return f"The notes answer {query}"


async def test_a_map_of_agents_tags_each_items_events_with_its_index():
    questions = ["What does Prefect schedule?", "What does Pinecone store?"]
    researcher = Agent(llms.OfflineChatModel(), tools=[look_up], name="researcher")  # deterministic tool calls
    chain = Chain([Map(researcher, over="questions", item_key="input", name="research")], name="agent-map-stream")
    events = [event async for event in chain.astream({"questions": questions}, tokens=True)]
    outputs = [output["output"] for output in events[-1]["__end__"]["research"]]

    calls = sorted((e["__tool_call__"] for e in events if "__tool_call__" in e), key=lambda c: c["index"])
    assert [(c["index"], c["node"], c["arguments"]) for c in calls] == [
        (i, "research", {"query": q}) for i, q in enumerate(questions)
    ]
    results = sorted((e["__tool_result__"] for e in events if "__tool_result__" in e), key=lambda r: r["index"])
    assert [(r["index"], r["node"], r["content"]) for r in results] == [
        (i, "research", f"The notes answer {q}") for i, q in enumerate(questions)
    ]
    for index, output in enumerate(outputs):
        tokens = [e["__token__"] for e in events if "__token__" in e and e["__token__"].get("index") == index]
        assert {t["node"] for t in tokens} == {"research"} and "".join(t["text"] for t in tokens) == output


# -- a Runnable with a model, streamed on its own ---------------------------------------------------


def tool_results_in_call_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`events` with each run of consecutive `__tool_result__` events sorted by call id (the
    concurrent calls of one turn may finish in either order)."""
    ordered: list[dict[str, Any]] = []
    for event in events:
        if "__tool_result__" in event and ordered and "__tool_result__" in ordered[-1]:
            run_start = len(ordered)
            while run_start > 0 and "__tool_result__" in ordered[run_start - 1]:
                run_start -= 1
            ordered[run_start:] = sorted([*ordered[run_start:], event], key=lambda e: e["__tool_result__"]["id"])
        else:
            ordered.append(event)
    return ordered


async def test_an_agent_streamed_on_its_own_gives_the_events_of_an_agent_step(server, run_name):
    adder = agent(server)
    script_two_calls(server)
    in_chain = [event async for event in Chain([adder], name="agent-as-step").astream({"input": "Add."}, tokens=True)]
    script_two_calls(server)
    alone = [event async for event in adder.astream({"input": "Add."}, {"run_name": run_name}, tokens=True)]

    # event for event the same, but for the end: the chain's state has the input key too
    assert tool_results_in_call_order(alone[:-1]) == tool_results_in_call_order(in_chain[:-1])
    assert alone[-1] == {"__end__": alone[-2]["adder"]}
    assert in_chain[-1] == {"__end__": {"input": "Add.", **alone[-2]["adder"]}}
    kinds = [next(iter(event)) for event in alone]
    assert kinds[-2:] == ["adder", "__end__"] and kinds.count("__tool_call__") == kinds.count("__tool_result__") == 2
    assert "".join(e["__token__"]["text"] for e in alone if "__token__" in e) == "Let me add." + ANSWER
    assert {e[kind]["node"] for e, kind in zip(alone, kinds, strict=True) if kind.startswith("__t")} == {"adder"}
    assert alone[-1]["__end__"]["output"] == ANSWER
    assert all(r.body.get("stream") for r in server.requests_to(CHAT)[-2:]), "the model was not asked to stream"
    # its own flow run, with its model turns and tool calls as task runs, as when invoked
    run = await read_flow_run(run_name)
    runs = await read_task_runs(run.id, expected=4)
    assert (run.name, run.state.name) == (run_name, "Completed")
    assert sorted(r.name for r in runs) == ["add", "add", MODEL, MODEL]
    assert KEY not in json.dumps(alone, default=str)


def test_an_agents_sync_stream_with_tokens_gives_the_same_events(server):
    script_two_calls(server)
    events = list(agent(server).stream("Add.", tokens=True))
    kinds = [next(iter(event)) for event in events]
    assert kinds[-2:] == ["adder", "__end__"] and kinds.count("__tool_call__") == 2
    assert "".join(e["__token__"]["text"] for e in events if "__token__" in e) == "Let me add." + ANSWER
    # without tokens=True: the one final output, as before, from plain requests
    server.reply_with("Plain.")
    assert [output["output"] for output in agent(server).stream("Add.")] == ["Plain."]
    assert not server.requests_to(CHAT)[-1].body.get("stream")


async def test_a_chat_model_streamed_on_its_own_gives_the_events_of_a_model_step(server):
    llm = chat_model(server)
    in_chain = [event async for event in Chain([llm], name="model-as-step").astream({"input": "Say hi."}, tokens=True)]
    alone = [event async for event in llm.astream("Say hi.", tokens=True)]
    assert alone[:-1] == in_chain[:-1]
    tokens = [e["__token__"] for e in alone if "__token__" in e]
    assert len(tokens) > 1 and {t["node"] for t in tokens} == {MODEL}
    assert "".join(t["text"] for t in tokens) == alone[-2][MODEL]["output"] == "Echo: Say hi."
    assert alone[-1] == {"__end__": alone[-2][MODEL]}
    # a message list too, and the sync twin; without tokens=True, text deltas as before
    messages = [SystemMessage("Be brief."), HumanMessage("Say hi.")]
    assert [next(iter(e)) for e in llm.stream(messages, tokens=True)][-2:] == [MODEL, "__end__"]
    assert "".join(llm.stream("Say hi.")) == "Echo: Say hi."


async def test_a_rag_chain_and_its_generation_step_stream_tokens(server):
    embedder = HashingEmbedder()
    store = InMemoryVectorStore()
    await store.aadd_documents([Document(page_content="Prefect retries tasks.")], embedder)
    llm = chat_model(server)
    rag = build_rag_chain(store, embedder, llm, k=1)
    events = [event async for event in rag.astream({"input": "How are tasks retried?"}, tokens=True)]
    tokens = [e["__token__"] for e in events if "__token__" in e]
    assert len(tokens) > 1 and {t["node"] for t in tokens} == {"generate"}
    assert "".join(t["text"] for t in tokens) == events[-1]["__end__"]["output"]
    step = [event async for event in GenerationStep(llm).astream(events[-1]["__end__"], tokens=True)]
    assert {e["__token__"]["node"] for e in step if "__token__" in e} == {"generate"}
    assert [next(iter(e)) for e in step][-2:] == ["generate", "__end__"]


# -- caching ---------------------------------------------------------------------------------------


async def test_a_cached_agent_step_rerun_makes_no_model_requests(server, storage, run_name):
    ran.clear()
    script_two_calls(server)
    chain = Chain([agent(server)], name="agent-cache", cache=True)
    first = await chain.ainvoke({"input": "Add."})
    assert chats(server) == 2 and len(ran) == 2
    again = await Chain([agent(server)], name="agent-cache", cache=True).ainvoke(
        {"input": "Add."}, {"run_name": run_name}
    )
    assert chats(server) == 2 and len(ran) == 2, "the re-run asked the model or ran a tool"
    assert again["output"] == first["output"] == ANSWER
    assert [type(m).__name__ for m in again["messages"]] == [type(m).__name__ for m in first["messages"]]
    [step] = await read_task_runs((await read_flow_run(run_name)).id, expected=1)
    assert (step.name, step.state.name) == ("adder", "Cached")
    assert_key_stored_nowhere(KEY)


async def test_model_turns_are_cached_so_a_rerun_after_a_failure_repays_nothing_answered(
    server, storage, run_name
):
    calls: list[int] = []
    # a captured list counts by type only in the fingerprint (a captured server would count by
    # its recorded requests, so the agent step would never hit; its model turns still would)
    fault_once = [server]

    @tool(name="add")
    def failing_later(a: int, b: int = 0) -> int:
        """Add two integers (and make the model's next request fail, the first time)."""
        calls.append(a)
        if fault_once:
            fault_once.pop().fail_next(500, path=CHAT)
        return a + b

    server.reply_with({"tool_calls": [{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 40}}]})
    chain = Chain([agent(server, tools=[failing_later])], name="agent-turns", cache=True)
    with pytest.raises(Exception, match="500|Internal"):
        await chain.ainvoke({"input": "Add."})
    assert chats(server) == 2 and calls == [2]  # turn 1 answered, turn 2 failed

    server.reply_with("42.")
    result = await chain.ainvoke({"input": "Add."}, {"run_name": run_name})
    assert result["output"] == "42."
    assert chats(server) == 3, "the answered first turn was asked again"
    assert calls == [2, 2], "the tool call must run again (tools are not cached)"
    runs = await read_task_runs((await read_flow_run(run_name)).id, expected=4)
    assert [(r.name, r.state.name) for r in runs] == [
        ("adder", "Completed"), (MODEL, "Cached"), ("add", "Completed"), (MODEL, "Completed"),
    ]
    # the whole step is now a hit
    await chain.ainvoke({"input": "Add."})
    assert chats(server) == 3 and calls == [2, 2]


class Verdict(pydantic.BaseModel):
    answer: str


@pytest.mark.parametrize(
    "change",
    [
        {"model_name": "gpt-4o"},
        {"temperature": 0.7},
        {"api_key": KEY + "-other"},
        {"tools": [add, multiply]},
        {"system_prompt": "Use the tools, briefly."},
        {"max_iterations": 3},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_any_change_of_the_agent_is_a_miss(server, storage, change):
    server.api_key = None  # the changed key must reach the server
    base = agent(server)
    assert base.cache_key() == agent(server).cache_key()  # by value, not identity
    assert KEY not in base.cache_key()
    await Chain([base], name="agent-miss", cache=True).ainvoke({"input": "Hello"})
    await Chain([agent(server)], name="agent-miss", cache=True).ainvoke({"input": "Hello"})
    assert chats(server) == 1
    changed = agent(server, **change)
    assert changed.cache_key() != base.cache_key()
    with cache_hits() as record:
        await Chain([changed], name="agent-miss", cache=True).ainvoke({"input": "Hello"})
    assert "adder" in record.misses
    if "max_iterations" in change:  # the agent step misses, but the model was asked the same
        assert record.hits == [MODEL] and chats(server) == 1
    else:
        assert sorted(record.misses) == ["adder", changed.llm.name] and record.hits == []
        assert chats(server) == 2


async def test_a_cached_map_of_agents_caches_each_items_model_turns(server, storage):
    chain = Chain([Map(agent(server), over="questions", item_key="input", name="research")],
                  name="agent-map-cache", cache=True)
    await chain.ainvoke({"questions": ["Say a.", "Say b."]})
    assert chats(server) == 2
    # A longer list misses every item (each item's key holds the list), but not the model turns
    # the first run answered: only the new item asks the model.
    with cache_hits() as record:
        result = await chain.ainvoke({"questions": ["Say a.", "Say b.", "Say c."]})
    assert chats(server) == 3
    assert sorted(record.hits) == [MODEL, MODEL]
    assert sorted(record.misses) == [MODEL, "research", "research", "research"]
    assert [output["output"] for output in result["research"]] == ["Echo: Say a.", "Echo: Say b.", "Echo: Say c."]


def test_output_type_is_part_of_the_key(server):
    plain = agent(server)
    typed = Agent(chat_model(server), tools=[add], system_prompt="Use the tools.", output_type=Verdict)
    assert typed.cache_key() != plain.cache_key()


async def test_a_model_turn_retried_by_its_own_policy_announces_the_retry_first(server):
    server.break_stream_next(after=2)  # the turn's stream fails after two chunks
    adder = Agent(chat_model(server), tools=[add], name="adder", model_retries=1)
    chain = Chain([adder], name="agent-turn-retry")
    events = [event async for event in chain.astream({"input": "Say hi."}, tokens=True)]
    retry_at = next(i for i, event in enumerate(events) if "__retry__" in event)
    assert events[retry_at]["__retry__"] == {"node": "adder", "attempt": 2, "substep": adder.model_step.name}
    void = "".join(e["__token__"]["text"] for e in events[:retry_at] if "__token__" in e)
    kept = "".join(e["__token__"]["text"] for e in events[retry_at:] if "__token__" in e)
    assert void and kept == events[-1]["__end__"]["output"] == "Echo: Say hi."
    assert chats(server) == 2
