"""Graph nodes on Prefect's Dask task runner (prefect-dask): the same results as the default
runner, each node a task run on the cluster, edges recorded.

The cluster is a temporary LocalCluster of 2 workers with 2 threads each, in this process (threads,
not processes: worker processes would need PREFECT_API_URL to reach the session's API).
"""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Any

import pytest

from prefect_beluga import Graph, RunConfig
from prefect_beluga.testing.helpers import read_flow_run, read_task_runs

prefect_dask = pytest.importorskip("prefect_dask")


def local_cluster() -> Any:
    return prefect_dask.DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 2, "processes": False,
                        "dashboard_address": None},
    )


async def fetch(state: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    await asyncio.sleep(0.2)
    return {"docs": [f"doc about {state['input']}"], "fetch_at": [started, time.monotonic()]}


async def search(state: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    await asyncio.sleep(0.2)
    return {"docs": [f"web page on {state['input']}"], "search_at": [started, time.monotonic()]}


def rank(state: dict[str, Any]) -> dict[str, Any]:  # a sync node
    return {"ranked": sorted(state["docs"])}


def answer(state: dict[str, Any]) -> dict[str, Any]:
    return {"output": f"{len(state['ranked'])} sources for {state['input']}"}


def build(**options: Any) -> Graph:
    graph = Graph(name="dask-rag", reducers={"docs": operator.add}, **options)
    graph.add_node("plan", lambda s: {"query": s["input"].upper()})
    graph.add_node("fetch", fetch).add_node("search", search)
    graph.add_node("rank", rank).add_node("answer", answer)
    graph.add_edge("plan", "fetch").add_edge("plan", "search")
    graph.add_edge("fetch", "rank").add_edge("search", "rank").add_edge("rank", "answer")
    return graph.set_entry_point("plan").set_finish_point("answer")


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if not k.endswith("_at")}


async def test_nodes_on_dask_give_the_default_runners_results(run_name: str) -> None:
    default = await build().ainvoke({"input": "whales"})
    on_dask = await build(task_runner=local_cluster()).ainvoke(
        {"input": "whales"}, RunConfig(run_name=run_name)
    )
    assert comparable(on_dask) == comparable(default)
    assert on_dask["output"] == "2 sources for whales"
    # fetch and search ran at once on the cluster (Dask may put both on the worker holding plan):
    # each started before the other ended, which one after the other never does
    (fetch_start, fetch_end), (search_start, search_end) = on_dask["fetch_at"], on_dask["search_at"]
    assert max(fetch_start, search_start) < min(fetch_end, search_end)

    flow_run = await read_flow_run(run_name)
    assert flow_run.state.is_completed()
    runs = {r.name: r for r in await read_task_runs(flow_run.id, expected=5)}
    assert set(runs) == {"plan", "fetch", "search", "rank", "answer"}
    assert all(r.state.is_completed() for r in runs.values())
    upstream = {i.id for inputs in runs["rank"].task_inputs.values() for i in inputs}
    assert {runs["fetch"].id, runs["search"].id} <= upstream


async def test_a_failing_node_on_dask_fails_the_graph_naming_it() -> None:
    def broken(state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("index offline")

    graph = Graph(name="dask-broken", task_runner=local_cluster(), artifact=False)
    graph.add_node("plan", lambda s: {"q": 1}).add_node("broken", broken)
    graph.add_edge("plan", "broken").set_entry_point("plan").set_finish_point("broken")
    with pytest.raises(RuntimeError, match="index offline") as caught:
        await graph.ainvoke({"input": "x"})
    assert "broken" in "".join(getattr(caught.value, "__notes__", []))


def test_task_runner_must_be_a_prefect_task_runner() -> None:
    from prefect_beluga import ValidationError

    with pytest.raises(ValidationError, match="task_runner must be a Prefect TaskRunner"):
        Graph(task_runner="dask")
