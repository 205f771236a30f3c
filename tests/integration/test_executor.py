"""Running graphs: dataflow on Prefect task runs, routing, loops, state merging, failures."""

import asyncio
import operator
import time

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import FlowRunContext

from prefect_beluga import (
    END,
    Chain,
    Graph,
    GraphError,
    GraphNodesFailed,
    GraphRecursionError,
    GraphValidationError,
    RunConfig,
    Runnable,
    StateConflictError,
)
from prefect_beluga.testing.helpers import read_flow_run, read_subflow_runs, read_task_runs


class SimpleStep(Runnable):
    def __init__(self, name, delay=0.0):
        self.name = name
        self.delay = delay

    async def ainvoke(self, input, config=None):
        await asyncio.sleep(self.delay)
        return {"output": f"Result from {self.name}"}


def tutorial_graph(delay=0.0):
    graph = Graph(name="tutorial")
    graph.add_node("step1", SimpleStep("node1"))
    graph.add_node("step2", SimpleStep("node2", delay))
    graph.add_node("step3", SimpleStep("node3", delay))
    graph.add_edge("step1", "step2")
    graph.add_edge("step1", "step3")
    graph.set_entry_point(["step1"])
    graph.set_finish_point(["step2", "step3"])
    return graph


async def test_tutorial_graph_runs_parallel_branches_as_overlapping_task_runs(run_name):
    result = await tutorial_graph(delay=1.0).ainvoke({"input": "test"}, RunConfig(run_name=run_name))
    assert result == {
        "step2": {"input": "test", "output": "Result from node2"},
        "step3": {"input": "test", "output": "Result from node3"},
    }
    flow_run = await read_flow_run(run_name)
    runs = {t.name: t for t in await read_task_runs(flow_run.id, expected=3)}
    step2, step3 = runs["step2"], runs["step3"]
    assert step2.start_time < step3.end_time and step3.start_time < step2.end_time  # overlap
    for branch in (step2, step3):  # edges from step1 recorded by Prefect
        assert [i.id for i in branch.task_inputs["upstream"]] == [runs["step1"].id]


async def test_a_join_sees_both_parents_outputs_and_records_both_edges(run_name):
    graph = Graph(name="diamond")
    graph.add_node("start", lambda s: {"n": 1})
    graph.add_node("left", lambda s: {"left": s["n"] + 1})
    graph.add_node("right", lambda s: {"right": s["n"] + 2})
    graph.add_node("join", lambda s: {"total": s["left"] + s["right"]})
    graph.add_edge("start", "left").add_edge("start", "right")
    graph.add_edge("left", "join").add_edge("right", "join")
    graph.set_entry_point("start").set_finish_point("join")
    result = await graph.ainvoke({}, RunConfig(run_name=run_name))
    assert result == {"n": 1, "left": 2, "right": 3, "total": 5}
    runs = {t.name: t for t in await read_task_runs((await read_flow_run(run_name)).id, expected=4)}
    assert {i.id for i in runs["join"].task_inputs["upstream"]} == {runs["left"].id, runs["right"].id}


async def test_a_slow_branch_does_not_hold_back_an_independent_one():
    """Dataflow, not supersteps: 'fast2' starts when 'fast1' ends, not when 'slow' ends."""
    started = {}

    def record(name, delay):
        async def node(state):
            started[name] = time.monotonic()
            await asyncio.sleep(delay)
            return {name: True}

        return node

    graph = Graph(name="dataflow", artifact=False)
    for name, delay in [("entry", 0), ("slow", 1.5), ("fast1", 0.05), ("fast2", 0.05), ("sink", 0)]:
        graph.add_node(name, record(name, delay))
    graph.add_edge("entry", "slow").add_edge("entry", "fast1").add_edge("fast1", "fast2")
    graph.add_edge("slow", "sink").add_edge("fast2", "sink")
    graph.set_entry_point("entry").set_finish_point("sink")
    await graph.ainvoke({})
    assert started["fast2"] < started["slow"] + 1.0  # generous: would be >= 1.5 s in lock-step
    assert started["sink"] >= started["slow"] + 1.5


def conditional_graph():
    graph = Graph(name="routed")
    graph.add_node("step1", lambda s: {"length": len(s["input"])})
    graph.add_node("short", lambda s: {"answer": "short"})
    graph.add_node("long", lambda s: {"answer": "long"})
    graph.add_node("join", lambda s: {"final": s["answer"].upper()})
    graph.add_conditional_edges(
        "step1", lambda s: "long" if s["length"] > 5 else "short", {"short": "short", "long": "long"}
    )
    graph.add_edge("short", "join").add_edge("long", "join")
    return graph.set_entry_point("step1").set_finish_point("join")


async def test_branch_not_taken_is_skipped_and_the_join_waits_only_for_the_taken_one(run_name):
    run = await conditional_graph().arun("hi", RunConfig(run_name=run_name))
    assert run.result == {"input": "hi", "length": 2, "answer": "short", "final": "SHORT"}
    assert run.skipped == ("long",) and run.ran == {"step1": 1, "short": 1, "join": 1}
    flow_run = await read_flow_run(run_name)
    names = [t.name for t in await read_task_runs(flow_run.id, expected=3)]
    assert names == ["step1", "short", "join"]  # no task run for the skipped node
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    summary = artifacts[0].data
    assert artifacts[0].type == "markdown"
    assert "| long | skipped (branch not taken) | 0 |" in summary and "| short | ran | 1 |" in summary
    assert "```mermaid\nflowchart TD" in summary and "class long skipped" in summary


async def test_router_returning_a_list_runs_several_branches_and_end_stops_one():
    graph = Graph(name="fanout", artifact=False)
    graph.add_node("a", lambda s: {})
    graph.add_node("b", lambda s: {"b": 1}).add_node("c", lambda s: {"c": 1})
    graph.add_conditional_edges("a", lambda s: ["b", "c"])  # node names, no path_map
    graph.set_entry_point("a").set_finish_point(["b", "c"])
    assert await graph.ainvoke({}) == {"b": {"b": 1}, "c": {"c": 1}}

    stop = Graph(name="stop", artifact=False).add_node("a", lambda s: {}).add_node("b", lambda s: {})
    stop.add_conditional_edges("a", lambda s: END, {"go": "b"}).set_entry_point("a").set_finish_point(["a", "b"])
    run = await stop.arun({})
    assert run.result == {"a": {}} and run.skipped == ("b",)


async def test_router_returning_an_unknown_key_is_a_clear_error():
    graph = conditional_graph()
    graph.add_conditional_edges("short", lambda s: "sideways", {"up": "join"})
    with pytest.raises(
        GraphValidationError, match=r"router 'router' of node 'short' returned 'sideways', which is not one of \['up'\]"
    ):
        await graph.ainvoke("hi")


async def test_a_loop_reruns_its_node_as_new_task_runs_until_it_exits(run_name):
    graph = Graph(name="loop")
    graph.add_node("draft", lambda s: {"drafts": s.get("drafts", 0) + 1})
    graph.add_node("publish", lambda s: {"published": s["drafts"]})
    graph.add_conditional_edges(
        "draft", lambda s: "again" if s["drafts"] < 3 else "done", {"again": "draft", "done": "publish"}
    )
    graph.set_entry_point("draft").set_finish_point("publish")
    run = await graph.arun({}, RunConfig(run_name=run_name))
    assert run.result == {"drafts": 3, "published": 3} and run.ran == {"draft": 3, "publish": 1}
    names = [t.name for t in await read_task_runs((await read_flow_run(run_name)).id, expected=4)]
    assert names == ["draft", "draft[2]", "draft[3]", "publish"]


async def test_recursion_limit_stops_a_loop_that_never_exits():
    graph = Graph(name="forever", recursion_limit=4, artifact=False)
    graph.add_node("spin", lambda s: {"n": s.get("n", 0) + 1}).add_node("out", lambda s: {})
    graph.add_conditional_edges("spin", lambda s: "spin", {"spin": "spin", "out": "out"})
    graph.set_entry_point("spin").set_finish_point("out")
    with pytest.raises(GraphRecursionError, match="node 'spin' would run a 5th time, past recursion_limit=4"):
        await graph.ainvoke({})


def fork(reducers=None):
    graph = Graph(name="fork", reducers=reducers, artifact=False)
    graph.add_node("s", lambda s: {})
    graph.add_node("x", lambda s: {"docs": ["from x"]}).add_node("y", lambda s: {"docs": ["from y"]})
    graph.add_node("j", lambda s: {"count": len(s["docs"])})
    graph.add_edge("s", "x").add_edge("s", "y").add_edge("x", "j").add_edge("y", "j")
    return graph.set_entry_point("s").set_finish_point("j")


async def test_concurrent_writes_of_one_key_conflict_unless_reduced():
    with pytest.raises(StateConflictError) as error:
        await fork().ainvoke({})
    message = str(error.value)
    assert "'x'" in message and "'y'" in message and "'docs'" in message and "reducer" in message
    result = await fork({"docs": operator.add}).ainvoke({"docs": ["input"]})
    assert sorted(result["docs"]) == ["from x", "from y", "input"] and result["count"] == 3


async def test_sequential_writes_of_one_key_are_not_a_conflict():
    graph = Graph(name="overwrite", artifact=False)
    graph.add_node("a", lambda s: {"k": 1}).add_node("b", lambda s: {"k": 2}).add_node("c", lambda s: {})
    graph.add_node("j", lambda s: {})
    graph.add_edge("a", "b").add_edge("a", "c").add_edge("b", "j").add_edge("c", "j")
    graph.set_entry_point("a").set_finish_point("j")
    assert (await graph.ainvoke({}))["k"] == 2  # b descends from a: its write wins


async def test_sync_nodes_run_off_the_event_loop_and_async_nodes_on_it():
    def blocking(state):
        time.sleep(0.5)
        return {"sync": True}

    async def heartbeat(state):
        beats = 0
        for _ in range(5):
            await asyncio.sleep(0.05)
            beats += 1
        return {"beats": beats, "at": time.monotonic()}

    graph = Graph(name="mixed", artifact=False).add_node("blocking", blocking).add_node("heartbeat", heartbeat)
    graph.set_entry_point(["blocking", "heartbeat"]).set_finish_point(["blocking", "heartbeat"])
    started = time.monotonic()
    result = await graph.ainvoke({})
    assert result["blocking"]["sync"] and result["heartbeat"]["beats"] == 5
    # the heartbeat finished while the sync node was still sleeping
    assert result["heartbeat"]["at"] - started < time.monotonic() - started


async def test_fail_fast_raises_the_node_error_and_cancels_running_siblings():
    finished = []

    async def slow(state):
        await asyncio.sleep(5)
        finished.append("slow")
        return {}

    def boom(state):
        raise KeyError("missing")

    graph = Graph(name="failing", artifact=False).add_node("slow", slow).add_node("boom", boom)
    graph.set_entry_point(["slow", "boom"]).set_finish_point(["slow", "boom"])
    with pytest.raises(KeyError) as error:
        await graph.ainvoke({})
    assert "in node 'boom' of graph 'failing'" in error.value.__notes__
    assert finished == []


async def test_without_fail_fast_independent_branches_finish_and_every_failure_is_reported():
    def boom(name):
        def node(state):
            raise ValueError(f"{name} broke")

        node.__name__ = name
        return node

    after = []
    graph = Graph(name="tolerant", fail_fast=False, artifact=False)
    graph.add_node("ok", lambda s: {"ok": True}).add_node("bad1", boom("bad1")).add_node("bad2", boom("bad2"))
    graph.add_node("after_bad", lambda s: after.append(1) or {})
    graph.add_edge("bad1", "after_bad")
    graph.set_entry_point(["ok", "bad1", "bad2"]).set_finish_point(["ok", "after_bad", "bad2"])
    with pytest.raises(GraphNodesFailed) as error:
        await graph.ainvoke({})
    assert set(error.value.failures) == {"bad1", "bad2"}
    assert "bad1 broke" in str(error.value) and "bad2 broke" in str(error.value)
    assert after == []  # a node downstream of a failure does not run


async def test_node_retry_policy_is_the_task_retry_policy():
    attempts = []

    def flaky(state):
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return {"ok": True}

    graph = Graph(name="retrying", artifact=False).add_node("flaky", flaky, retries=2, retry_delay=0)
    graph.set_entry_point("flaky").set_finish_point("flaky")
    assert (await graph.ainvoke({}))["ok"] and len(attempts) == 3


async def test_max_concurrency_bounds_running_nodes():
    running, peak = [0], [0]

    async def node(state):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.1)
        running[0] -= 1
        return {}

    graph = Graph(name="bounded", max_concurrency=2, artifact=False)
    names = [f"n{i}" for i in range(6)]
    for name in names:
        graph.add_node(name, node)
    graph.set_entry_point(names).set_finish_point(names)
    await graph.ainvoke({})
    assert peak[0] == 2


async def test_chain_and_graph_nest_as_nodes():
    inner_chain = Chain([lambda s: {"chained": s["input"] + "!"}], name="inner-chain")
    inner_graph = tutorial_graph()
    graph = Graph(name="outer", artifact=False).add_node("chain", inner_chain).add_node("graph", inner_graph)
    graph.add_edge("chain", "graph").set_entry_point("chain").set_finish_point("graph")
    result = await graph.ainvoke("hey")
    assert result["chained"] == "hey!"
    assert result["step2"]["output"] == "Result from node2" and result["step3"]["input"] == "hey"


async def test_a_graph_inside_a_user_flow_is_a_subflow_of_that_run():
    @flow(name="user-flow")
    async def user_flow():
        await tutorial_graph().ainvoke("x")
        return FlowRunContext.get().flow_run.id

    parent_id = await user_flow()
    children = await read_subflow_runs(parent_id)
    assert [c.name for c in children] and all(c.parent_task_run_id for c in children)
    task_runs = await read_task_runs(children[0].id, expected=3)
    assert sorted(t.name for t in task_runs) == ["step1", "step2", "step3"]


async def test_stream_yields_node_updates_skips_and_the_result():
    updates = [u async for u in conditional_graph().astream("hi")]
    assert updates[0] == {"step1": {"length": 2}}
    assert {"__skipped__": ["long"]} in updates
    assert updates[-1] == {"__end__": {"input": "hi", "length": 2, "answer": "short", "final": "SHORT"}}


def test_sync_invoke_and_batch():
    graph = conditional_graph()
    assert graph.invoke("hi")["final"] == "SHORT"
    assert [r["final"] for r in graph.batch(["hi", "a long question"])] == ["SHORT", "LONG"]


async def test_prefect_tag_concurrency_limits_apply_to_tagged_nodes():
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="tag:beluga-test-llm", limit=1))
    running, peak = [0], [0]

    async def call_llm(state):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.2)
        running[0] -= 1
        return {}

    graph = Graph(name="limited", artifact=False)
    for name in ("a", "b", "c"):
        graph.add_node(name, call_llm, tags=["beluga-test-llm"])
    graph.set_entry_point(["a", "b", "c"]).set_finish_point(["a", "b", "c"])
    await graph.ainvoke({})
    assert peak[0] == 1


async def test_the_artifact_reports_failed_and_cancelled_nodes(run_name):
    async def slow(state):
        await asyncio.sleep(5)
        return {}

    def boom(state):
        raise RuntimeError("boom")

    graph = Graph(name="reported").add_node("slow", slow).add_node("boom", boom)
    graph.set_entry_point(["slow", "boom"]).set_finish_point(["slow", "boom"])
    with pytest.raises(RuntimeError):
        await graph.ainvoke({}, RunConfig(run_name=run_name))
    flow_run = await read_flow_run(run_name)
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    summary = next(a.data for a in artifacts if a.type == "markdown")
    assert "| boom | failed | 1 |" in summary and "| slow | cancelled | 1 |" in summary


def classify_graph(finish):
    graph = Graph(name="end", artifact=False)
    graph.add_node("classify", lambda s: {"size": len(s["input"])})
    graph.add_node("expand", lambda s: {"output": s["input"] * 2})
    graph.add_node("summarise", lambda s: {"output": s["input"][:3]})
    graph.add_conditional_edges(
        "classify", lambda s: "done" if s["size"] < 3 else ("long" if s["size"] > 9 else "medium"),
        {"done": END, "medium": "expand", "long": "summarise"},
    )
    return graph.set_entry_point("classify").set_finish_point(finish)


async def test_a_router_choosing_end_returns_the_state_the_run_ended_with():
    one = classify_graph("expand")
    assert await one.ainvoke({"input": "hi"}) == {"input": "hi", "size": 2}
    assert await one.ainvoke({"input": "hello"}) == {"input": "hello", "size": 5, "output": "hellohello"}

    several = classify_graph(["expand", "summarise"])
    run = await several.arun({"input": "hi"})
    assert run.result == {"classify": {"input": "hi", "size": 2}}  # keyed by the node that routed to END
    assert set(run.skipped) == {"expand", "summarise"}
    assert await several.ainvoke({"input": "a long input"}) == {
        "summarise": {"input": "a long input", "size": 12, "output": "a l"}
    }


async def test_end_from_one_branch_and_a_finish_point_on_another_are_both_in_the_result():
    graph = Graph(name="both", artifact=False)
    graph.add_node("a", lambda s: {}).add_node("b", lambda s: {"b": 1}).add_node("c", lambda s: {"c": 1})
    graph.add_edge("a", "b").add_edge("a", "c").add_conditional_edges("b", lambda s: END, {"more": "c"})
    graph.set_entry_point("a").set_finish_point(["c", "a"])
    assert await graph.ainvoke({}) == {"a": {}, "c": {"c": 1}, "b": {"b": 1}}


async def test_a_loop_may_exit_through_end():
    graph = Graph(name="loop-end", artifact=False)
    graph.add_node("draft", lambda s: {"drafts": s.get("drafts", 0) + 1}).add_node("publish", lambda s: {})
    graph.add_conditional_edges(
        "draft", lambda s: "again" if s["drafts"] < 3 else END, {"again": "draft", "never": "publish"}
    )
    run = await graph.set_entry_point("draft").set_finish_point("publish").arun({})
    assert run.result == {"drafts": 3} and run.ran == {"draft": 3} and run.skipped == ("publish",)


async def test_a_node_a_loop_skips_then_runs_is_never_streamed_as_skipped():
    """The rule: `__skipped__` names a node only if it does not run in that run; at once when
    nothing can run it later, at the end for a node in a loop's region (a later pass may run it)."""
    graph = Graph(name="loop-skips", artifact=False)
    graph.add_node("start", lambda s: {}).add_node("aside", lambda s: {})
    graph.add_node("draft", lambda s: {"drafts": s.get("drafts", 0) + 1})
    graph.add_node("publish", lambda s: {"published": s["drafts"]}).add_node("review", lambda s: {})
    graph.add_conditional_edges("start", lambda s: "draft", ["draft", "aside"])
    graph.add_conditional_edges(
        "draft", lambda s: "again" if s["drafts"] < 3 else "done",
        {"again": "draft", "done": "publish", "never": "review"},
    )
    graph.set_entry_point("start").set_finish_point("publish")
    events = [event async for event in graph.astream({})]
    assert [next(iter(event)) for event in events] == [
        "start", "__skipped__", "draft", "draft", "draft", "publish", "__skipped__", "__end__",
    ]
    assert events[1] == {"__skipped__": ["aside"]}  # outside the loop: reported at once
    assert events[-2] == {"__skipped__": ["review"]}  # in the loop, never run: at the end
    run = await graph.arun({})
    assert run.ran == {"start": 1, "draft": 3, "publish": 1} and set(run.skipped) == {"aside", "review"}


async def test_a_run_reaching_neither_a_finish_point_nor_end_is_an_error_not_an_empty_result():
    graph = Graph(name="astray", artifact=False)
    for name in ("a", "x", "f", "g"):
        graph.add_node(name, lambda s: {})
    graph.add_conditional_edges("a", lambda s: "x", ["x", "f", "g"])
    graph.set_entry_point("a").set_finish_point(["f", "g"])
    with pytest.raises(
        GraphError, match=r"ended without reaching a finish point \['f', 'g'\] or a router choosing END"
    ):
        await graph.ainvoke({})
