"""The Graph builder and compile-time validation."""

import asyncio
import operator
from itertools import pairwise

import pytest

from prefect_beluga import END, Graph, GraphValidationError, Orchestrator, ValidationError


def noop(state):
    return {}


def line(*names, **options):
    graph = Graph(**options)
    for name in names:
        graph.add_node(name, noop)
    for source, target in pairwise(names):
        graph.add_edge(source, target)
    return graph.set_entry_point(names[0]).set_finish_point(names[-1])


def test_builder_methods_chain_and_compile_to_an_immutable_graph():
    graph = Orchestrator().create_graph(name="g")
    assert graph.add_node("a", noop).add_node("b", noop).add_edge("a", "b") is graph
    compiled = graph.set_entry_point("a").set_finish_point("b").compile()
    assert compiled is graph.compile()  # cached until the builder changes
    assert list(compiled.nodes) == ["a", "b"] and compiled.edges == (("a", "b"),)
    with pytest.raises(TypeError):
        compiled.nodes["c"] = None
    graph.add_node("c", noop).add_edge("b", "c")
    assert graph.compile() is not compiled and "c" not in compiled.nodes


def test_edge_to_end_makes_a_finish_point():
    graph = Graph().add_node("a", noop).add_edge("a", END).set_entry_point("a")
    assert graph.compile().finish_points == ("a",)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Graph(), "has no nodes"),
        (lambda: Graph().add_node("a", noop).set_finish_point("a"), "no entry point"),
        (lambda: Graph().add_node("a", noop).set_entry_point("a"), "no finish point"),
        (lambda: line("a", "b").add_edge("a", "ghost"), "unknown node 'ghost'"),
        (lambda: line("a", "b").set_entry_point("x"), "entry point 'x' is not a node"),
        (lambda: line("a", "b").set_finish_point("x"), "finish point 'x' is not a node"),
        (lambda: line("a", "b", "c").add_edge("c", "a"), "cycle without a conditional edge: a -> b -> c -> a"),
        (lambda: line("a", "b").add_node("island", noop), "node(s) ['island'] cannot be reached"),
        (
            lambda: line("a", "b").add_node("z", noop).set_finish_point(["b", "z"]),
            "finish point(s) ['z'] cannot be reached",
        ),
        (
            lambda: line("a", "b").add_conditional_edges("a", lambda s: "x", {"x": "nowhere"}),
            "sends 'x' to unknown node 'nowhere'",
        ),
        (
            lambda: line("a").add_conditional_edges("ghost", lambda s: "a"),
            "conditional edges from unknown node 'ghost'",
        ),
    ],
)
def test_validation_errors_name_the_offender(build, message):
    with pytest.raises(GraphValidationError, match=None) as error:
        build().compile()
    assert message in str(error.value)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda g: g.add_node("a", noop), "node 'a' already present"),
        (lambda g: g.add_node(END, noop), "reserved"),
        (lambda g: g.add_node("", noop), "non-empty str"),
        (lambda g: g.add_node("x", 42), "node 'x' of graph 'graph' must be a Runnable or a callable"),
        (lambda g: g.add_node("x", noop, retries=-1), "retries must be an int >= 0"),
        (lambda g: g.add_edge("a", "b").add_edge("a", "b"), "edge 'a' -> 'b' already present"),
        (lambda g: g.add_conditional_edges("a", "not callable"), "router for 'a' must be callable"),
        (lambda g: g.set_entry_point([]), "entry point must be a node name"),
    ],
)
def test_builder_rejects_bad_calls_at_once(call, message):
    graph = Graph().add_node("a", noop).add_node("b", noop)
    with pytest.raises(ValidationError) as error:
        call(graph)
    assert message in str(error.value)


def test_constructor_validates_options():
    with pytest.raises(ValidationError, match="recursion_limit"):
        Graph(recursion_limit=0)
    with pytest.raises(ValidationError, match="max_concurrency"):
        Graph(max_concurrency=0)
    with pytest.raises(ValidationError, match="reducer for key 'docs' is not callable"):
        Graph(reducers={"docs": "add"})


def test_a_cycle_through_a_conditional_edge_is_allowed():
    graph = Graph().add_node("a", noop).add_node("b", noop).add_edge("a", "b")
    graph.add_conditional_edges("b", lambda s: END, {"again": "a", "stop": END})
    compiled = graph.set_entry_point("a").set_finish_point("b").compile()
    assert ("b", "a") in compiled.topology.back_edges


def test_mermaid_shows_nodes_edges_and_routes():
    graph = line("step1", "step2").add_node("step3", noop)
    graph.add_conditional_edges("step1", lambda s: "long", {"short": "step2", "long": "step3"})
    graph.set_finish_point(["step2", "step3"])
    text = graph.to_mermaid()
    assert text.startswith("flowchart TD")
    for expected in ("__start__ --> step1", "step1 --> step2", "step1 -. long .-> step3", "step3 --> __end__"):
        assert expected in text
    coloured = graph.compile().to_mermaid(ran={"step1": 1, "step3": 2}, skipped=["step2"])
    assert 'step3["step3 ×2"]' in coloured and "class step2 skipped" in coloured


async def test_a_reducer_sees_concurrent_writes_in_the_order_nodes_were_added_not_finished():
    async def slow(state):
        await asyncio.sleep(0.3)
        return {"docs": ["slow"]}

    async def fast(state):
        return {"docs": ["fast"]}

    graph = Graph(name="reducer-order", reducers={"docs": operator.add})
    graph.add_node("start", lambda s: {"docs": ["start"]})
    graph.add_node("slow", slow).add_node("fast", fast).add_node("join", lambda s: {"seen": list(s["docs"])})
    graph.add_edge("start", "slow").add_edge("start", "fast").add_edge("slow", "join").add_edge("fast", "join")
    graph.set_entry_point("start").set_finish_point("join")
    result = await graph.ainvoke({})
    assert result["seen"] == ["start", "slow", "fast"]
