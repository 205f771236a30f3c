"""Map: one Prefect task run per item, outputs in order, per-item retries, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest

from prefect_beluga import Chain, Graph, GraphNodesFailed, Map, RunConfig, ValidationError
from prefect_beluga.testing.helpers import aeventually, eventually, read_flow_run, read_task_runs, reaped

PEAKS: dict[int, Peak] = {}


def _peak(key: int) -> Peak:
    return PEAKS[key]


class Peak:
    """Counts items in flight (thread-safe: Dask runs items on worker threads).

    Dask pickles the item's function (even with an in-process cluster): a Peak travels as a
    reference to this process's instance.
    """

    def __init__(self) -> None:
        PEAKS[id(self)] = self
        self.lock = threading.Lock()
        self.now = self.peak = 0
        self.calls: Counter[int] = Counter()

    def enter(self, index: int) -> None:
        with self.lock:
            self.calls[index] += 1
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (_peak, (id(self),))

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def summarizer(peak: Peak, delay: float = 0.0, fail: dict[int, int] | None = None, meet: int = 0) -> Any:
    """`meet`: each item first waits (up to 30 s) until that many items were in flight at once,
    so a check of concurrency does not depend on the machine's speed."""
    fail = dict(fail or {})

    async def summarize(state: dict[str, Any]) -> dict[str, Any]:
        index = state["index"]
        peak.enter(index)
        try:
            in_flight = f"{meet} items in flight at once"
            await aeventually(lambda: peak.peak >= meet, in_flight, timeout=30, interval=0.01, raises=False)
            await asyncio.sleep(delay)
            if fail.get(index, 0) > 0:
                fail[index] -= 1
                raise RuntimeError(f"flaky item {index}")
            return {"summary": state["item"].upper(), "topic": state["input"]}
        finally:
            peak.leave()

    return summarize


def map_graph(step: Any, name: str = "map-graph", **node: Any) -> Graph:
    over = node.pop("over", "docs")
    options = {k: node.pop(k) for k in ("fail_fast", "task_runner") if k in node}
    limit = node.pop("max_concurrency", None)
    graph = Graph(name=name, artifact=False, **options)
    graph.add_node("retrieve", lambda s: {"docs": s["docs_in"]})
    graph.add_node("summarize", Map(step, over=over, max_concurrency=limit), **node)
    graph.add_node("combine", lambda s: {"output": " | ".join(o["summary"] for o in s["summarize"])})
    graph.add_edge("retrieve", "summarize").add_edge("summarize", "combine")
    return graph.set_entry_point("retrieve").set_finish_point("combine")


DOCS = [f"doc {i}" for i in range(8)]


async def test_one_task_run_per_item_outputs_in_item_order(run_name: str) -> None:
    peak = Peak()
    result = await map_graph(summarizer(peak, delay=0.02)).ainvoke(
        {"input": "whales", "docs_in": DOCS}, RunConfig(run_name=run_name)
    )
    assert [o["summary"] for o in result["summarize"]] == [d.upper() for d in DOCS]
    assert all(o["topic"] == "whales" for o in result["summarize"])
    assert result["output"].startswith("DOC 0 | DOC 1")
    assert "item" not in result and "index" not in result  # item inputs stay inside the items

    flow_run = await read_flow_run(run_name)
    runs = await read_task_runs(flow_run.id, expected=len(DOCS) + 2)
    names = Counter(r.name for r in runs)
    assert names == Counter(["retrieve", "combine", *(f"summarize[{i}]" for i in range(len(DOCS)))])
    assert all(r.state.is_completed() for r in runs)


async def test_max_concurrency_bounds_items_in_flight() -> None:
    peak = Peak()
    graph = map_graph(summarizer(peak, delay=0.05), max_concurrency=3)
    result = await graph.ainvoke({"input": "x", "docs_in": [f"d{i}" for i in range(12)]})
    assert len(result["summarize"]) == 12
    assert peak.peak == 3  # bounded, and the bound was reached

    unbounded = Peak()
    await map_graph(summarizer(unbounded, delay=0.05)).ainvoke({"input": "x", "docs_in": DOCS})
    assert unbounded.peak > 3


async def test_a_flaky_item_is_retried_alone(run_name: str) -> None:
    peak = Peak()
    graph = map_graph(summarizer(peak, fail={5: 1}), retries=2)
    result = await graph.ainvoke({"input": "x", "docs_in": DOCS}, RunConfig(run_name=run_name))
    assert [o["summary"] for o in result["summarize"]] == [d.upper() for d in DOCS]
    assert peak.calls == Counter({**{i: 1 for i in range(len(DOCS))}, 5: 2})

    flow_run = await read_flow_run(run_name)
    runs = {r.name: r for r in await read_task_runs(flow_run.id, expected=len(DOCS) + 2)}
    assert runs["summarize[5]"].run_count == 2
    assert all(runs[f"summarize[{i}]"].run_count == 1 for i in range(len(DOCS)) if i != 5)


async def test_an_empty_list_runs_nothing_and_gives_an_empty_list() -> None:
    peak = Peak()
    result = await map_graph(summarizer(peak)).ainvoke({"input": "x", "docs_in": []})
    assert result["summarize"] == [] and result["output"] == ""
    assert peak.calls == Counter()


@pytest.mark.parametrize(
    ("docs_key", "value", "message"),
    [("elsewhere", ["a"], "no such key"), ("docs", "not a list", "got str")],
)
async def test_a_missing_or_non_list_key_is_a_validation_error_naming_key_and_node(
    docs_key: str, value: Any, message: str
) -> None:
    graph = Graph(name="map-bad", artifact=False)
    graph.add_node("retrieve", lambda s: {docs_key: value})
    graph.add_node("summarize", Map(summarizer(Peak()), over="docs"))
    graph.add_edge("retrieve", "summarize").set_entry_point("retrieve").set_finish_point("summarize")
    with pytest.raises(ValidationError, match=message) as caught:
        await graph.ainvoke({"input": "x"})
    text = str(caught.value)
    assert "'docs'" in text and "node 'summarize'" in text


async def test_a_finally_failing_item_fails_the_node_naming_its_index() -> None:
    graph = map_graph(summarizer(Peak(), fail={3: 9}), retries=1)
    with pytest.raises(RuntimeError, match="flaky item 3") as caught:
        await graph.ainvoke({"input": "x", "docs_in": DOCS})
    notes = "\n".join(caught.value.__notes__)
    assert "item 3 of node 'summarize'" in notes


async def test_with_fail_fast_off_a_failing_item_is_reported_in_graph_nodes_failed() -> None:
    graph = map_graph(summarizer(Peak(), fail={2: 9}), fail_fast=False)
    with pytest.raises(GraphNodesFailed) as caught:
        await graph.ainvoke({"input": "x", "docs_in": DOCS})
    failure = caught.value.failures["summarize"]
    assert "flaky item 2" in str(failure)
    assert any("item 2" in note for note in failure.__notes__)


async def test_map_as_a_chain_step(run_name: str) -> None:
    peak = Peak()
    chain = Chain(
        [lambda s: {"docs": s["input"].split()},
         Map(summarizer(peak), over="docs", into="summaries", name="summarize"),
         lambda s: {"output": [o["summary"] for o in s["summaries"]]}],
        name="map-chain", retries=1,
    )
    result = await chain.ainvoke({"input": "a b c"}, RunConfig(run_name=run_name))
    assert result["output"] == ["A", "B", "C"]
    flow_run = await read_flow_run(run_name)
    names = {r.name for r in await read_task_runs(flow_run.id, expected=5)}
    assert {"summarize[0]", "summarize[1]", "summarize[2]"} <= names


async def test_map_called_directly_runs_items_without_task_runs() -> None:
    peak = Peak()
    mapped = Map(summarizer(peak, delay=0.02), over="docs", max_concurrency=2)
    result = await mapped.ainvoke({"input": "x", "docs": DOCS})
    assert [o["summary"] for o in result["summarize"]] == [d.upper() for d in DOCS]
    assert peak.peak == 2


def test_bad_map_arguments_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match="over must be a non-empty state key"):
        Map(lambda s: s, over="")
    with pytest.raises(ValidationError, match="max_concurrency must be an int >= 1"):
        Map(lambda s: s, over="docs", max_concurrency=0)


async def test_a_map_of_a_lambda_needs_into_or_name() -> None:
    with pytest.raises(ValidationError, match=r"Map over 'docs': a lambda has no name .*give the Map into="):
        Map(lambda s: {"n": len(s["item"])}, over="docs")
    sizes = Map(lambda s: {"n": len(s["item"])}, over="docs", into="sizes")
    assert await sizes.ainvoke({"docs": ["ab", "c"]}) == {"sizes": [{"n": 2}, {"n": 1}]}
    assert Map(lambda s: s, over="docs", name="sizes").name == "sizes"


async def test_items_go_to_the_dask_task_runner(run_name: str) -> None:
    prefect_dask = pytest.importorskip("prefect_dask")
    runner = prefect_dask.DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 2, "processes": False,
                        "dashboard_address": None},
    )
    peak = Peak()
    graph = map_graph(summarizer(peak, delay=0.1, meet=2), name="map-dask", task_runner=runner,
                      max_concurrency=3, retries=1)
    result = await graph.ainvoke({"input": "x", "docs_in": DOCS}, RunConfig(run_name=run_name))
    assert [o["summary"] for o in result["summarize"]] == [d.upper() for d in DOCS]
    assert result["output"].startswith("DOC 0")
    assert 1 < peak.peak <= 3
    flow_run = await read_flow_run(run_name)
    names = Counter(r.name for r in await read_task_runs(flow_run.id, expected=len(DOCS) + 2))
    assert names == Counter(["retrieve", "combine", *(f"summarize[{i}]" for i in range(len(DOCS)))])


def test_a_killed_workflow_retried_reruns_only_the_missing_items(tmp_path: Any) -> None:
    """Items 0-5 of a Map in a workflow; the process is SIGKILLed while item 3 waits. Retrying
    the run reads the five finished items back and runs only item 3."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import map_workflow_fixtures as mx
    import workflow_fixtures as fx

    log, gate = tmp_path / "items.log", tmp_path / "gate"
    code = (
        "import map_workflow_fixtures as mx, time\n"
        f"wid, rid = mx.durable_map.execute({{'n': 6, 'log': {str(log)!r}, 'gate': {str(gate)!r}}})\n"
        "print(rid, flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=fx.subprocess_env(),
                             stdout=subprocess.PIPE, text=True)
    with reaped(child):
        run_id = child.stdout.readline().strip()
        eventually(lambda: log.exists() and len(log.read_text().splitlines()) == 5, "the five other items to finish",
                   timeout=90, interval=0.1, process=child)
        time.sleep(1.0)  # let the last finished item's result be persisted and recorded
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    gate.touch()
    assert mx.durable_map.retry(run_id) == ("test-durable-map", run_id)
    result = mx.durable_map.get_result("test-durable-map", run_id, timeout=90)
    assert result["labels"] == [f"item-{i}" for i in range(6)]
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(i) for i, _ in lines) == [0, 1, 2, 3, 4, 5]  # each item ran once
    assert [int(i) for i, pid in lines if pid == str(os.getpid())] == [3]


SHOUTED: Counter[str] = Counter()


def shout(state: dict[str, Any]) -> dict[str, Any]:
    SHOUTED[state["item"]] += 1
    return {"loud": state["item"].upper()}


async def test_a_cached_map_step_answers_every_item_from_the_cache_on_a_rerun(run_name: str, tmp_path) -> None:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    docs = ["a", "b", "c"]
    chain = Chain([Map(shout, over="docs", name="shout")], name="cached-map", cache=True)
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path}):
        first = await chain.ainvoke({"docs": docs})
        second = await chain.ainvoke({"docs": docs}, RunConfig(run_name=run_name))
        assert SHOUTED == Counter(docs)  # the re-run paid for no item
        assert second["shout"] == first["shout"] == [{"loud": d.upper()} for d in docs]
        runs = await read_task_runs((await read_flow_run(run_name)).id, expected=len(docs))
        assert sorted((r.name, r.state.name) for r in runs) == [(f"shout[{i}]", "Cached") for i in range(3)]

        await chain.ainvoke({"docs": [*docs, "d"]})  # the key is the item's whole input, list included
    assert SHOUTED == Counter({"a": 2, "b": 2, "c": 2, "d": 1})
