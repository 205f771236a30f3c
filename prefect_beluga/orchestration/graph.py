"""Graph: a builder of nodes and edges that compiles into a validated, immutable runnable.

Nodes run as Prefect task runs as soon as every parent that will run has finished (dataflow,
not supersteps), so independent branches overlap and a graph's wall time approaches its
critical path. Edges are data dependencies: each node's task run receives its parents'
outputs, so Prefect records the edges and the UI draws them.

Examples:
    The tutorial's graph: step2 and step3 both follow step1 and run at the same time.

    >>> from prefect_beluga import Graph
    >>> graph = Graph()
    >>> graph.add_node("step1", SimpleStep("node1"))
    >>> graph.add_node("step2", SimpleStep("node2")).add_node("step3", SimpleStep("node3"))
    >>> graph.add_edge("step1", "step2").add_edge("step1", "step3")
    >>> graph.set_entry_point("step1").set_finish_point(["step2", "step3"])
    >>> graph.invoke({"input": "test"})
    {'step2': {'input': 'test', 'output': 'Result from node2'}, 'step3': {...}}

    Routing at run time: branches not taken are skipped, and a join waits only for
    parents that run.

    >>> graph.add_conditional_edges("step1", lambda s: "long" if len(s["input"]) > 9 else "short",
    ...                             {"short": "step2", "long": "step3"})
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Union

from prefect.task_runners import TaskRunner

from prefect_beluga.core.config import ConfigLike, RunConfig, ensure_config
from prefect_beluga.core.errors import GraphValidationError, ValidationError
from prefect_beluga.core.retry import RetryOn
from prefect_beluga.core.runnable import Runnable, coerce_to_runnable
from prefect_beluga.core.state import coerce_input
from prefect_beluga.orchestration.mermaid import graph_to_mermaid
from prefect_beluga.orchestration._runtime import body_flow, run_body
from prefect_beluga.orchestration._stream import stream_updates
from prefect_beluga.orchestration._tasks import RetryPolicy, runnable_task

END = "__end__"
"""Route to END (from a router, or `add_edge(node, END)`) to finish a branch."""

START = "__start__"

Router = Callable[[dict[str, Any]], Union[str, Sequence[str]]]
Reducer = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class NodeSpec:
    """A node: its runnable, retry policy and Prefect tags."""

    name: str
    runnable: Runnable
    policy: RetryPolicy
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConditionalEdge:
    """Edges from `source` chosen at run time by `router(state)`.

    `path_map` maps the router's return values to node names (or END); without it the
    router returns node names directly.
    """

    source: str
    router: Router
    path_map: Mapping[Any, str] | None = None

    @property
    def router_name(self) -> str:
        return getattr(self.router, "__name__", type(self.router).__name__).replace("<lambda>", "router")

    def possible_targets(self, nodes: Sequence[str]) -> tuple[str, ...]:
        """Every node this edge may route to (all nodes when there is no path_map)."""
        if self.path_map is None:
            return tuple(nodes)
        return tuple(dict.fromkeys(t for t in self.path_map.values() if t != END))

    def resolve(self, choice: Any, nodes: Mapping[str, Any]) -> list[str]:
        """The targets (maybe END) for a router's return value, or a clear error."""
        choices = list(choice) if isinstance(choice, (list, tuple, set, frozenset)) else [choice]
        targets = []
        for item in choices:
            if self.path_map is not None and _hashable(item) and item in self.path_map:
                targets.append(self.path_map[item])
            elif item == END or (self.path_map is None and item in nodes):
                targets.append(item)
            else:
                allowed = list(self.path_map) if self.path_map is not None else [*nodes, END]
                raise GraphValidationError(
                    f"router {self.router_name!r} of node {self.source!r} returned {item!r}, "
                    f"which is not one of {allowed}"
                )
        return targets


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class Graph(Runnable):
    """A builder for graphs of Runnables; `compile()` validates it into a `CompiledGraph`.

    Builder methods return the graph, so calls chain. `invoke`/`ainvoke`/`batch`/`stream` on
    the builder compile it on first use (and again after it changes).

    Args:
        reducers: How to combine concurrent writes of one state key, e.g.
            `{"docs": operator.add}`; without one, two concurrent nodes writing different
            values to a key is a `StateConflictError` naming both nodes and the key.
        recursion_limit: How many times one node may run in one invocation (loops).
        name: Name of the graph's flow (default "graph").
        max_concurrency: At most this many nodes run at once (default: no limit).
        fail_fast: On a node failure, cancel running nodes and raise at once (default). With
            False, independent branches finish and a `GraphNodesFailed` lists every failure.
        subflow: Inside a flow run, run as a subflow (default) or as the caller's tasks.
        artifact: Attach the graph, coloured by what ran, as a Mermaid artifact to its flow run.
        task_runner: A Prefect task runner (e.g. `prefect_dask.DaskTaskRunner()`): the
            graph's flow uses it, and nodes are submitted to it (`task.submit`) instead of
            awaited on the flow's event loop. With `subflow=False` inside a flow run, nodes
            are submitted to the caller's flow's task runner.

    Examples:
        >>> graph = Graph(reducers={"docs": operator.add}, name="rag")

        Nodes on a temporary local Dask cluster, or on an existing one:

        >>> from prefect_dask import DaskTaskRunner
        >>> graph = Graph(task_runner=DaskTaskRunner())
        >>> graph = Graph(task_runner=DaskTaskRunner(address="tcp://scheduler:8786"))
    """

    def __init__(
        self,
        *,
        reducers: Mapping[str, Reducer] | None = None,
        recursion_limit: int = 25,
        name: str | None = None,
        max_concurrency: int | None = None,
        fail_fast: bool = True,
        subflow: bool = True,
        artifact: bool = True,
        task_runner: TaskRunner | type[TaskRunner] | None = None,
    ) -> None:
        self.name = name or "graph"
        if not isinstance(recursion_limit, int) or recursion_limit < 1:
            raise ValidationError(f"graph {self.name!r}: recursion_limit must be an int >= 1, got {recursion_limit!r}")
        if max_concurrency is not None and (not isinstance(max_concurrency, int) or max_concurrency < 1):
            raise ValidationError(f"graph {self.name!r}: max_concurrency must be an int >= 1, got {max_concurrency!r}")
        reducers = dict(reducers or {})
        for key, reducer in reducers.items():
            if not callable(reducer):
                raise ValidationError(f"graph {self.name!r}: reducer for key {key!r} is not callable")
        self.reducers = reducers
        self.recursion_limit = recursion_limit
        self.max_concurrency = max_concurrency
        self.fail_fast = fail_fast
        self.subflow = subflow
        self.artifact = artifact
        if isinstance(task_runner, type) and issubclass(task_runner, TaskRunner):
            task_runner = task_runner()
        if task_runner is not None and not isinstance(task_runner, TaskRunner):
            raise ValidationError(
                f"graph {self.name!r}: task_runner must be a Prefect TaskRunner (e.g. "
                f"prefect_dask.DaskTaskRunner()), got {type(task_runner).__name__}"
            )
        self.task_runner = task_runner
        self._nodes: dict[str, NodeSpec] = {}
        self._edges: list[tuple[str, str]] = []
        self._conditional: list[ConditionalEdge] = []
        self._entry: list[str] = []
        self._finish: list[str] = []
        self._compiled: CompiledGraph | None = None

    # -- building -------------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        runnable: Runnable | Callable[..., Any],
        *,
        retries: int = 0,
        retry_delay: float | Sequence[float] = 0.0,
        retry_jitter: float | None = None,
        retry_on: RetryOn | None = None,
        timeout: float | None = None,
        tags: Sequence[str] = (),
    ) -> Graph:
        """Add a node running `runnable` (a Runnable, Chain, Graph or function of the state)."""
        if not isinstance(name, str) or not name:
            raise ValidationError(f"graph {self.name!r}: a node name must be a non-empty str, got {name!r}")
        if name in (START, END):
            raise ValidationError(f"graph {self.name!r}: {name!r} is reserved and cannot name a node")
        if name in self._nodes:
            raise ValidationError(f"graph {self.name!r}: node {name!r} already present")
        try:
            policy = RetryPolicy(retries=retries, retry_delay=retry_delay, retry_jitter=retry_jitter, retry_on=retry_on, timeout=timeout)
        except ValidationError as exc:
            raise ValidationError(f"graph {self.name!r}: node {name!r}: {exc}") from None
        runnable = coerce_to_runnable(runnable, where=f"node {name!r} of graph {self.name!r}")
        self._nodes[name] = NodeSpec(name, runnable, policy, tuple(tags))
        return self._changed()

    def add_edge(self, source: str, target: str) -> Graph:
        """Run `target` after `source`, on its output; `add_edge(x, END)` makes x a finish point."""
        if target == END:
            return self.set_finish_point([*self._finish, source] if source not in self._finish else self._finish)
        if source == END:
            raise ValidationError(f"graph {self.name!r}: no edge can leave END (edge {source!r} -> {target!r})")
        if (source, target) in self._edges:
            raise ValidationError(f"graph {self.name!r}: edge {source!r} -> {target!r} already present")
        self._edges.append((source, target))
        return self._changed()

    def add_conditional_edges(
        self, source: str, router: Router, path_map: Mapping[Any, str] | Sequence[str] | None = None
    ) -> Graph:
        """After `source`, run the node(s) `router(state)` picks (a key of `path_map`, a node
        name, a list of them, or END); the others are skipped."""
        if not callable(router):
            raise ValidationError(f"graph {self.name!r}: router for {source!r} must be callable, got {type(router).__name__}")
        if path_map is not None and not isinstance(path_map, Mapping):
            if isinstance(path_map, str) or not isinstance(path_map, Sequence):
                raise ValidationError(f"graph {self.name!r}: path_map for {source!r} must be a dict or a list of node names")
            path_map = {target: target for target in path_map}
        frozen_map = MappingProxyType(dict(path_map)) if path_map is not None else None
        self._conditional.append(ConditionalEdge(source, router, frozen_map))
        return self._changed()

    def set_entry_point(self, names: str | Sequence[str]) -> Graph:
        """The node(s) that receive the graph's input and start first."""
        self._entry = self._names(names, "entry point")
        return self._changed()

    def set_finish_point(self, names: str | Sequence[str]) -> Graph:
        """The node(s) whose state is the result (several: a dict keyed by node name)."""
        self._finish = self._names(names, "finish point")
        return self._changed()

    def _names(self, names: str | Sequence[str], what: str) -> list[str]:
        listed = [names] if isinstance(names, str) else list(names)
        if not listed or not all(isinstance(n, str) for n in listed):
            raise ValidationError(f"graph {self.name!r}: {what} must be a node name or a non-empty list of them, got {names!r}")
        return list(dict.fromkeys(listed))

    def _changed(self) -> Graph:
        self._compiled = None
        return self

    # -- compiling and running --------------------------------------------------------------

    def compile(self) -> CompiledGraph:
        """Validate the graph and return its immutable, runnable form (cached until a change)."""
        if self._compiled is None:
            self._compiled = CompiledGraph(self)
        return self._compiled

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> Any:
        return await self.compile().ainvoke(input, config)

    async def astream(
        self, input: Any, config: ConfigLike = None, *, tokens: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        async for update in self.compile().astream(input, config, tokens=tokens):
            yield update

    def stream(
        self, input: Any, config: ConfigLike = None, *, tokens: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Sync `astream` (with `tokens=True`, the models' text deltas too)."""
        return Runnable.stream(self, input, config, tokens=tokens)

    async def arun(self, input: Any, config: ConfigLike = None) -> GraphRun:
        """Run and return the result with what ran, what was skipped, and how often."""
        return await self.compile().arun(input, config)

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (validates it first)."""
        return self.compile().to_mermaid()

    def __repr__(self) -> str:
        return f"Graph(name={self.name!r}, nodes={list(self._nodes)})"


@dataclass(frozen=True)
class GraphRun:
    """The outcome of one graph invocation.

    Attributes:
        result: What `invoke` returns: the finish point's state, or a dict of them.
        ran: How many times each node ran.
        skipped: Nodes on branches that were not taken.
    """

    result: Any
    ran: Mapping[str, int]
    skipped: tuple[str, ...]


class CompiledGraph(Runnable):
    """A validated, immutable graph. Made by `Graph.compile()`; runs as a Prefect flow."""

    def __init__(self, builder: Graph) -> None:
        self.name = builder.name
        self.nodes: Mapping[str, NodeSpec] = MappingProxyType(dict(builder._nodes))
        self.edges: tuple[tuple[str, str], ...] = tuple(builder._edges)
        self.conditional_edges: tuple[ConditionalEdge, ...] = tuple(builder._conditional)
        self.entry_points: tuple[str, ...] = tuple(builder._entry)
        self.finish_points: tuple[str, ...] = tuple(builder._finish)
        self.reducers: Mapping[str, Reducer] = MappingProxyType(dict(builder.reducers))
        self.recursion_limit = builder.recursion_limit
        self.max_concurrency = builder.max_concurrency
        self.fail_fast = builder.fail_fast
        self.subflow = builder.subflow
        self.artifact = builder.artifact
        self.task_runner = builder.task_runner
        self._validate()
        self.topology = Topology.of(self)
        self.tasks = MappingProxyType({
            name: runnable_task(
                spec.runnable, name=name, where=f"node {name!r} of graph {self.name!r}",
                policy=spec.policy, tags=spec.tags,
            )
            for name, spec in self.nodes.items()
        })
        self._flow = body_flow(
            self.name, self._run, description=f"Graph of {len(self.nodes)} nodes",
            task_runner=self.task_runner,
        )

    def _validate(self) -> None:
        where = f"graph {self.name!r}"
        if not self.nodes:
            raise GraphValidationError(f"{where} has no nodes; add some with add_node()")
        if not self.entry_points:
            raise GraphValidationError(f"{where} has no entry point; call set_entry_point()")
        if not self.finish_points:
            raise GraphValidationError(f"{where} has no finish point; call set_finish_point() or add_edge(node, END)")
        for what, names in (("entry point", self.entry_points), ("finish point", self.finish_points)):
            for name in names:
                if name not in self.nodes:
                    raise GraphValidationError(f"{where}: {what} {name!r} is not a node; nodes: {list(self.nodes)}")
        for source, target in self.edges:
            for end in (source, target):
                if end not in self.nodes:
                    raise GraphValidationError(f"{where}: edge {source!r} -> {target!r} names unknown node {end!r}")
        for edge in self.conditional_edges:
            if edge.source not in self.nodes:
                raise GraphValidationError(f"{where}: conditional edges from unknown node {edge.source!r}")
            for key, target in (edge.path_map or {}).items():
                if target != END and target not in self.nodes:
                    raise GraphValidationError(
                        f"{where}: path_map of node {edge.source!r} sends {key!r} to unknown node {target!r}"
                    )
        cycle = _find_cycle({n: [t for s, t in self.edges if s == n] for n in self.nodes})
        if cycle:
            raise GraphValidationError(
                f"{where} has a cycle without a conditional edge: {' -> '.join(cycle)}; "
                "loops must leave through add_conditional_edges so they can end"
            )
        reachable = _reachable(self.entry_points, self._successors)
        unreachable_finish = [n for n in self.finish_points if n not in reachable]
        if unreachable_finish:
            raise GraphValidationError(
                f"{where}: finish point(s) {unreachable_finish} cannot be reached from the entry point(s) {list(self.entry_points)}"
            )
        unreachable = [n for n in self.nodes if n not in reachable]
        if unreachable:
            raise GraphValidationError(
                f"{where}: node(s) {unreachable} cannot be reached from the entry point(s) {list(self.entry_points)}"
            )

    def _successors(self, node: str) -> list[str]:
        """Every node that may run right after `node`."""
        targets = [t for s, t in self.edges if s == node]
        for edge in self.conditional_edges:
            if edge.source == node:
                targets += edge.possible_targets(list(self.nodes))
        return list(dict.fromkeys(targets))

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> Any:
        return (await self.arun(input, config)).result

    def stream(
        self, input: Any, config: ConfigLike = None, *, tokens: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Sync `astream` (with `tokens=True`, the models' text deltas too)."""
        return Runnable.stream(self, input, config, tokens=tokens)

    async def arun(self, input: Any, config: ConfigLike = None) -> GraphRun:
        """Run and return the result with what ran, what was skipped, and how often."""
        state = coerce_input(input, where=f"graph {self.name!r}")
        return await run_body(self._flow, self._run, state, ensure_config(config), subflow=self.subflow)

    async def astream(
        self, input: Any, config: ConfigLike = None, *, tokens: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield `{node: output}` as each node finishes, `{"__skipped__": [node]}` for
        branches not taken, then `{"__end__": result}`.

        With `tokens=True`, also `{"__token__": {"node": node, "text": delta}}` for each text
        delta of a chat model inside a node, as it is emitted (parallel nodes interleave,
        each chunk tagged; the innermost step or node names it), and
        `{"__retry__": {"node": node, "attempt": n}}` before a retried node's fresh stream.
        """
        async for update in stream_updates(self, input, config, tokens=tokens):
            if END in update and isinstance(update[END], GraphRun):
                update = {END: update[END].result}
            yield update

    async def _run(self, state: dict[str, Any], config: RunConfig) -> GraphRun:
        from prefect_beluga.orchestration.executor import execute

        return await execute(self, state, config)

    def to_mermaid(self, **run_colours: Any) -> str:
        """The graph as a Mermaid flowchart."""
        return graph_to_mermaid(self, **run_colours)

    def __repr__(self) -> str:
        return f"CompiledGraph(name={self.name!r}, nodes={list(self.nodes)})"


@dataclass(frozen=True)
class Topology:
    """What the executor needs to know of a graph's shape, computed once at compile time.

    Back edges (found by depth-first search from the entry points) close loops; all other
    edges are forward edges. A node waits for its forward parents; a back edge re-runs its
    target and everything forward-reachable from it.
    """

    static_targets: Mapping[str, tuple[str, ...]]
    conditional: Mapping[str, tuple[ConditionalEdge, ...]]
    forward_parents: Mapping[str, frozenset[str]]
    back_edges: frozenset[tuple[str, str]]
    forward_reach: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, graph: CompiledGraph) -> Topology:
        names = list(graph.nodes)
        static = {n: tuple(t for s, t in graph.edges if s == n) for n in names}
        conditional = {n: tuple(e for e in graph.conditional_edges if e.source == n) for n in names}
        back: set[tuple[str, str]] = set()
        state: dict[str, int] = {}  # 1: on the DFS stack, 2: done

        def visit(node: str) -> None:
            state[node] = 1
            for target in graph._successors(node):
                if state.get(target) == 1:
                    back.add((node, target))
                elif target not in state:
                    visit(target)
            state[node] = 2

        for entry in graph.entry_points:
            if entry not in state:
                visit(entry)
        parents: dict[str, set[str]] = {n: set() for n in names}
        forward: dict[str, list[str]] = {n: [] for n in names}
        for node in names:
            for target in graph._successors(node):
                if (node, target) not in back:
                    parents[target].add(node)
                    forward[node].append(target)
        reach = {n: frozenset(_reachable([n], forward.__getitem__)) for n in names}
        return cls(
            static_targets=MappingProxyType(static),
            conditional=MappingProxyType(conditional),
            forward_parents=MappingProxyType({n: frozenset(p) for n, p in parents.items()}),
            back_edges=frozenset(back),
            forward_reach=MappingProxyType(reach),
        )


def _reachable(starts: Sequence[str], successors: Callable[[str], Sequence[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(successors(node))
    return seen


def _find_cycle(successors: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in `successors` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in successors.get(node, ()):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in successors:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


__all__ = ["END", "START", "CompiledGraph", "Graph", "GraphRun"]
