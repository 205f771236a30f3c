"""Deep and wide graphs: compiling, validating and running need no recursion and stay linear.

The runs record about 7,000 task runs. Each test gets a server of its own: on the session's API,
recording them would delay every later test's task runs by a minute or more, and on one shared
SQLite server the event backlog of one test's thousands of runs can keep the database busy past
the client's retries of the next test's first request (503 on ``POST /flow_runs/``).
"""

import sys
from collections.abc import Iterator

import pytest

from prefect_beluga import Graph, GraphValidationError
from prefect_beluga.testing.prefect_server import PrefectServer


@pytest.fixture
def own_api() -> Iterator[None]:
    with PrefectServer() as server, server.settings():
        yield


def writes(key, value):
    return lambda state: {key: value}


def chain_of(n, name="deep"):
    graph = Graph(name=name, artifact=False)
    for i in range(n):
        graph.add_node(f"n{i}", writes("last", i))
        if i:
            graph.add_edge(f"n{i - 1}", f"n{i}")
    return graph.set_entry_point("n0").set_finish_point(f"n{n - 1}")


def fan(width):
    graph = Graph(name="wide", artifact=False)
    graph.add_node("source", writes("started", True)).add_node("sink", lambda s: {"seen": len(s) - 1})
    for i in range(width):
        graph.add_node(f"w{i}", writes(f"k{i}", i)).add_edge("source", f"w{i}").add_edge(f"w{i}", "sink")
    return graph.set_entry_point("source").set_finish_point("sink")


def test_a_10000_node_chain_compiles_and_draws():
    assert sys.getrecursionlimit() < 10_000  # so a recursive walk would fail here
    compiled = chain_of(10_000).compile()
    assert compiled.topology.order["n9999"] == 9_999 and not compiled.topology.back_edges
    assert compiled.to_mermaid().count(" --> ") == 10_000 + 1  # start, 9,999 edges, end


def test_deep_graphs_report_unconditional_cycles_and_unreachable_nodes():
    looped = chain_of(5_000).add_edge("n4999", "n2500")
    with pytest.raises(
        GraphValidationError, match=r"cycle without a conditional edge: n2500 -> n2501 -> .* -> n4999 -> n2500"
    ):
        looped.compile()
    stranded = chain_of(5_000).add_node("alone", writes("x", 1)).add_edge("alone", "n4999")
    with pytest.raises(GraphValidationError, match=r"node\(s\) \['alone'\] cannot be reached"):
        stranded.compile()


async def test_a_2000_node_chain_runs_end_to_end(own_api):
    run = await chain_of(2_000).arun({"input": "x"})
    assert run.result == {"input": "x", "last": 1_999}
    assert len(run.ran) == 2_000 and set(run.ran.values()) == {1}


async def test_a_2000_wide_fan_out_and_fan_in_runs(own_api):
    run = await fan(2_000).arun({})
    assert run.result["seen"] == 2_000  # keys besides "started": one from each branch
    assert run.result["k1999"] == 1_999 and run.ran["sink"] == 1


async def test_a_skipped_branch_of_3000_nodes_is_skipped_without_recursion(own_api):
    graph = chain_of(3_000, name="skip").add_node("entry", writes("go", False))
    graph.add_node("other", writes("last", "other"))
    graph.add_conditional_edges("entry", lambda s: "long" if s["go"] else "short", {"long": "n0", "short": "other"})
    graph.set_entry_point("entry").set_finish_point(["n2999", "other"])
    run = await graph.arun({})
    assert run.result == {"other": {"go": False, "last": "other"}} and len(run.skipped) == 3_000
