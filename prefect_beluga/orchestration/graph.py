"""Graph: a builder of nodes and edges that compiles into a validated, immutable runnable.

Nodes run as Prefect task runs as soon as every parent that will run has finished (dataflow,
not supersteps), so independent branches overlap and a graph's wall time approaches its
critical path. Edges are data dependencies: each node's task run receives its parents'
outputs, so Prefect records the edges and the UI draws them.

The builder (`Graph`) produces a frozen `GraphSpec`; `compile()` checks it and computes its
shape once (`Topology`, in the topology module, which the executor uses too) and returns a
`CompiledGraph`. Compiling and running are iterative: deep and wide graphs need no recursion.

Ending a run. A run ends when no node is left to run. Its result is the state of the node(s)
it ended at: the finish points that ran, and any node whose router chose `END`. With one
finish point that is a single state (the finish point's if it ran, otherwise the state of the
node that routed to `END`); with several, a dict keyed by the nodes that ended the run, the
one that routed to `END` included. A router choosing `END` is never an error, and a result is
never `{}`: a run that reaches neither a finish point nor `END` raises `GraphError`. LangGraph's
`StateGraph` behaves alike for `END` (`invoke` returns the state the run ended with); it has
one shared state instead of a state per finish point, and no finish points of its own.

Examples:
    The tutorial's graph: step2 and step3 both follow step1 and run at the same time.

    ```python
    from prefect_beluga import Graph

    def step(label):
        return lambda state: {label: f"Result from {label}"}

    graph = Graph()
    graph.add_node("step1", step("node1"))
    graph.add_node("step2", step("node2")).add_node("step3", step("node3"))
    graph.add_edge("step1", "step2").add_edge("step1", "step3")
    graph.set_entry_point("step1").set_finish_point(["step2", "step3"])
    result = graph.invoke({"input": "test"})
    assert set(result) == {"step2", "step3"}
    ```

    Routing at run time: branches not taken are skipped, a join waits only for parents that
    run, and a router may end the run with `END`.

    ```python
    from prefect_beluga import END, Graph

    graph = Graph()
    graph.add_node("classify", lambda state: {"size": len(state["input"])})
    graph.add_node("expand", lambda state: {"output": state["input"] * 2})
    graph.add_conditional_edges(
        "classify", lambda state: "long" if state["size"] > 9 else "done", {"long": "expand", "done": END}
    )
    graph.set_entry_point("classify").set_finish_point("expand")
    assert graph.invoke({"input": "hi"}) == {"input": "hi", "size": 2}  # ended at classify
    ```
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from prefect.task_runners import TaskRunner

from prefect_beluga.core._checks import check_bool, check_int
from prefect_beluga.core.config import ConfigLike, RunConfig, ensure_config
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.event_stream import stream_events
from prefect_beluga.core.retry import RetryOn
from prefect_beluga.core.runnable import Runnable, coerce_to_runnable
from prefect_beluga.core.state import coerce_input
from prefect_beluga.orchestration._cache import CacheSettings
from prefect_beluga.orchestration._durable import check_durable, entered
from prefect_beluga.orchestration._executor import GraphRun, NodeTasks, execute
from prefect_beluga.orchestration._mermaid import graph_to_mermaid
from prefect_beluga.orchestration._runtime import body_flow, in_flow_run, run_body
from prefect_beluga.orchestration._stream import stopped_body
from prefect_beluga.orchestration._tasks import RetryPolicy, StepCall
from prefect_beluga.orchestration._topology import (
    END,
    START,
    ConditionalEdge,
    GraphSpec,
    NodeSpec,
    Reducer,
    Router,
    Topology,
)
from prefect_beluga.orchestration._usage import budgeted
from prefect_beluga.orchestration._usage import setup as usage_setup
from prefect_beluga.usage import UsageLimits
from prefect_beluga.usage._limits import check_limits


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
        cache: Default of `add_node(cache=...)`: cache nodes across runs by value (docs/cache.md).
        cache_expiration: Default of `add_node(cache_expiration=...)` (a `timedelta`).
        cache_storage: Where cached outputs are kept (a Prefect filesystem block or its slug);
            default: Prefect's result storage.
        fail_fast: On a node failure, cancel running nodes and raise at once (default). With
            False, independent branches finish and a `GraphNodesFailed` lists every failure.
        subflow: Inside a flow run, run as a subflow (default) or as the caller's tasks.
        artifact: Attach the graph, coloured by what ran, as a Mermaid artifact to its flow run.
        task_runner: A Prefect task runner (e.g. `prefect_dask.DaskTaskRunner()`): the
            graph's flow uses it, and nodes are submitted to it (`task.submit`) instead of
            awaited on the flow's event loop. With `subflow=False` inside a flow run, nodes
            are submitted to the caller's flow's task runner.
        durable: Inside a flow run (yours, or a workflow's), persist each finished node's
            output under the run and the node's place in it, so a retried or re-run flow run
            reads it back (docs/durability.md). False: nodes run again. Nodes submitted to a
            `task_runner` are not durable.
        usage_limits: A `UsageLimits` budget for each run of the graph, shared by its nodes
            (parallel ones too), Map items, agents and retries: a model request past it is not
            sent and `UsageLimitExceeded` is raised (docs/budgets.md). A `cost_usd` limit
            checks the prices of the nodes' chat models at `compile()`.

    Examples:
        A state key that concurrent nodes append to, and nodes on a Dask cluster:

        ```python
        import operator

        from prefect_beluga import Graph

        graph = Graph(reducers={"docs": operator.add}, name="rag")
        # from prefect_dask import DaskTaskRunner
        # graph = Graph(task_runner=DaskTaskRunner())  # or DaskTaskRunner(address="tcp://scheduler:8786")
        ```
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
        cache: bool = False,
        cache_expiration: timedelta | None = None,
        cache_storage: Any = None,
        durable: bool = True,
        usage_limits: UsageLimits | None = None,
    ) -> None:
        self.name = name or "graph"
        self.durable = check_durable(durable, f"graph {self.name!r}")
        self.usage_limits = check_limits(usage_limits, f"graph {self.name!r}")
        check_bool(cache, f"graph {self.name!r}: cache")
        self.cache, self.cache_expiration, self.cache_storage = cache, cache_expiration, cache_storage
        check_int(recursion_limit, f"graph {self.name!r}: recursion_limit", low=1)
        check_int(max_concurrency, f"graph {self.name!r}: max_concurrency", low=1, none=True)
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
        cache: bool | None = None,
        cache_expiration: timedelta | None = None,
    ) -> Graph:
        """Add a node running `runnable` (a Runnable, Chain, Graph or function of the state).

        `cache` (default: the graph's `cache`) caches the node across runs by value: a node
        whose input state was seen before returns the stored output without running (see
        docs/cache.md); `cache_expiration` (default: the graph's) bounds the reuse.
        """
        if not isinstance(name, str) or not name:
            raise ValidationError(f"graph {self.name!r}: a node name must be a non-empty str, got {name!r}")
        if name in (START, END):
            raise ValidationError(f"graph {self.name!r}: {name!r} is reserved and cannot name a node")
        if name in self._nodes:
            raise ValidationError(f"graph {self.name!r}: node {name!r} already present")
        try:
            policy = RetryPolicy(
                retries=retries, retry_delay=retry_delay, retry_jitter=retry_jitter, retry_on=retry_on, timeout=timeout
            )
        except ValidationError as exc:
            raise ValidationError(f"graph {self.name!r}: node {name!r}: {exc}") from None
        runnable = coerce_to_runnable(runnable, where=f"node {name!r} of graph {self.name!r}")
        if cache is not None and not isinstance(cache, bool):
            raise ValidationError(
                f"graph {self.name!r}: node {name!r}: cache must be True, False or None, got {cache!r}"
            )
        settings = None
        if self.cache if cache is None else cache:
            expiration = self.cache_expiration if cache_expiration is None else cache_expiration
            try:
                settings = CacheSettings(f"graph {self.name!r}", expiration, self.cache_storage)
            except ValidationError as exc:
                raise ValidationError(f"node {name!r}: {exc}") from None
        self._nodes[name] = NodeSpec(name, runnable, policy, tuple(tags), settings)
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
            raise ValidationError(
                f"graph {self.name!r}: router for {source!r} must be callable, got {type(router).__name__}"
            )
        if path_map is not None and not isinstance(path_map, Mapping):
            if isinstance(path_map, str) or not isinstance(path_map, Sequence):
                raise ValidationError(
                    f"graph {self.name!r}: path_map for {source!r} must be a dict or a list of node names"
                )
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
            raise ValidationError(
                f"graph {self.name!r}: {what} must be a node name or a non-empty list of them, got {names!r}"
            )
        return list(dict.fromkeys(listed))

    def _changed(self) -> Graph:
        self._compiled = None
        return self

    # -- compiling and running --------------------------------------------------------------

    def compile(self) -> CompiledGraph:
        """Validate the graph and return its immutable, runnable form (cached until a change)."""
        if self._compiled is None:
            self._compiled = CompiledGraph(self.spec(), durable=self.durable)
        return self._compiled

    def spec(self) -> GraphSpec:
        """The graph as it stands, frozen (not validated: `compile()` does that)."""
        return GraphSpec(
            name=self.name,
            nodes=MappingProxyType(dict(self._nodes)),
            edges=tuple(self._edges),
            conditional_edges=tuple(self._conditional),
            entry_points=tuple(self._entry),
            finish_points=tuple(self._finish),
            reducers=MappingProxyType(dict(self.reducers)),
            recursion_limit=self.recursion_limit,
            max_concurrency=self.max_concurrency,
            fail_fast=self.fail_fast,
            subflow=self.subflow,
            artifact=self.artifact,
            task_runner=self.task_runner,
            usage_limits=self.usage_limits,
        )

    async def ainvoke(self, input: Any, config: ConfigLike = None) -> Any:
        return await self.compile().ainvoke(input, config)

    async def astream(
        self, input: Any, config: ConfigLike = None, *, tokens: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        # aclosing: leaving this generator early closes the run's stream at once (it stops the run).
        async with contextlib.aclosing(self.compile().astream(input, config, tokens=tokens)) as updates:
            async for update in updates:
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


class CompiledGraph(Runnable):
    """A validated, immutable graph. Made by `Graph.compile()`; runs as a Prefect flow."""

    def __init__(self, spec: GraphSpec, *, durable: bool = True) -> None:
        self.topology = Topology.of(spec)  # validates first
        self.durable = durable
        self.spec = spec
        self.name = spec.name
        self.nodes: Mapping[str, NodeSpec] = spec.nodes
        self.edges: tuple[tuple[str, str], ...] = spec.edges
        self.conditional_edges: tuple[ConditionalEdge, ...] = spec.conditional_edges
        self.entry_points: tuple[str, ...] = spec.entry_points
        self.finish_points: tuple[str, ...] = spec.finish_points
        self.reducers: Mapping[str, Reducer] = spec.reducers
        self.recursion_limit = spec.recursion_limit
        self.max_concurrency = spec.max_concurrency
        self.fail_fast = spec.fail_fast
        self.subflow = spec.subflow
        self.artifact = spec.artifact
        self.task_runner = spec.task_runner
        self.tasks: Mapping[str, StepCall] = NodeTasks(spec)
        self.usage_limits = usage_setup(spec.usage_limits, self, f"graph {self.name!r}")
        self._flow = body_flow(
            self.name,
            self._flow_body,
            description=f"Graph of {len(self.nodes)} nodes",
            task_runner=self.task_runner,
        )

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
        async with entered(self.name, self.durable, top_level=not in_flow_run()):
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
        async with contextlib.aclosing(stream_events(self, input, config, tokens=tokens)) as updates:
            async for update in updates:
                if END in update and isinstance(update[END], GraphRun):
                    update = {END: update[END].result}
                yield update

    async def _flow_body(self, state: dict[str, Any], config: RunConfig) -> Any:
        """The graph's flow function: `_run`, ending Cancelled when a streaming caller left."""
        return await stopped_body(self._run, state, config)

    async def _run(self, state: dict[str, Any], config: RunConfig) -> GraphRun:
        if self.usage_limits is None:
            return await execute(self, state, config)
        async with budgeted(self.usage_limits, f"graph {self.name!r}", self._flow):
            return await execute(self, state, config)

    def to_mermaid(self, **run_colours: Any) -> str:
        """The graph as a Mermaid flowchart."""
        return graph_to_mermaid(self.spec, **run_colours)

    def __repr__(self) -> str:
        return f"CompiledGraph(name={self.name!r}, nodes={list(self.nodes)})"


__all__ = ["END", "START", "CompiledGraph", "Graph", "GraphRun"]
