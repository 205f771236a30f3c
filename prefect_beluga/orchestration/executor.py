"""The dataflow executor: runs a compiled graph's nodes as Prefect task runs.

A node starts as soon as every forward parent has *resolved* — finished, or been skipped
because a router did not choose it — and at least one of them chose it. There are no
supersteps: a slow branch never holds back an independent one. A back edge (a loop) re-runs
its target, and everything forward-reachable from it, as new task runs named `node[2]`, ...

A node's input is the graph input updated with the outputs of all its ancestors, applied in
a topological order that does not depend on timing (ancestors first; concurrent nodes in the
order they were added), so a reducer sees the same order on every run. Two ancestors that are concurrent (neither
is an ancestor of the other) writing different values to one key is a `StateConflictError`,
unless the graph has a reducer for the key.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from prefect.artifacts import acreate_markdown_artifact
from prefect.logging import get_run_logger
from prefect.utilities.annotations import quote

from prefect_beluga.core.config import RunConfig
from prefect_beluga.core.errors import (
    GraphError,
    GraphNodesFailed,
    GraphRecursionError,
    StateConflictError,
    add_step_note,
)
from prefect_beluga.orchestration._runtime import in_flow_run
from prefect_beluga.orchestration._stream import StreamSink
from prefect_beluga.orchestration._tasks import call_args

if TYPE_CHECKING:
    from prefect_beluga.orchestration.graph import CompiledGraph, ConditionalEdge, GraphRun

SKIPPED_KEY = "__skipped__"


@dataclass(frozen=True)
class Activation:
    """One finished run of a node."""

    node: str
    number: int  # 1 for the first run of the node, 2 for its first re-run in a loop, ...
    id: int  # order of completion: ancestors always have smaller ids
    output: dict[str, Any]  # the very object the node's task returned (Prefect links it)
    state: dict[str, Any]  # the state after this node
    lineage: frozenset[int]  # ids of this activation and all its ancestors
    future: Any = None  # the Prefect future, when the node was submitted to a task runner


Token = Optional[Activation]  # None: the parent resolved without choosing this node


class _Execution:
    """The mutable state of one graph invocation."""

    def __init__(self, graph: CompiledGraph, input: dict[str, Any], config: RunConfig) -> None:
        self.graph = graph
        self.topology = graph.topology
        self.rank = {name: index for index, name in enumerate(graph.nodes)}  # order added
        self.input = input
        self.config = config
        # Passed quoted, like the state: Prefect need not walk (and rebuild) it on every call.
        self.quoted_config = quote(config)
        limit = config.max_concurrency or graph.max_concurrency
        self.limit = asyncio.Semaphore(limit) if limit else None
        self.sink = StreamSink.current(graph)
        self.ids = itertools.count()
        self.activations: dict[int, Activation] = {}
        self.latest: dict[str, Activation] = {}
        self.runs: Counter[str] = Counter()
        self.started: set[str] = set()  # in the current pass over the node's region
        self.resolved: dict[str, Token] = {}
        self.tokens: dict[str, dict[str, Token]] = {name: {} for name in graph.nodes}
        self.skipped: dict[str, None] = {}
        self.failures: dict[str, BaseException] = {}  # with fail_fast=False
        self.failed: dict[str, None] = {}  # every node that failed
        self.completed: Counter[str] = Counter()
        self.running: set[asyncio.Task[None]] = set()
        self.fatal: BaseException | None = None
        self.settled = asyncio.Event()

    async def run(self) -> GraphRun:
        from prefect_beluga.orchestration.graph import GraphRun

        for entry in self.graph.entry_points:
            self.started.add(entry)
            self.start(entry, [])
        try:
            if self.running:
                await self.settled.wait()
        finally:
            await self.cancel_running()
        if self.fatal is not None:
            raise self.fatal
        skipped = tuple(n for n in self.skipped if self.runs[n] == 0)
        if self.failures:
            listing = "; ".join(f"node {n!r}: {e!r}" for n, e in self.failures.items())
            raise GraphNodesFailed(
                f"graph {self.graph.name!r}: {len(self.failures)} node(s) failed: {listing}",
                dict(self.failures),
            ) from next(iter(self.failures.values()))
        return GraphRun(result=self.result(), ran=dict(self.runs), skipped=skipped)

    def result(self) -> Any:
        finish = self.graph.finish_points
        if len(finish) > 1:
            return {name: self.latest[name].state for name in finish if name in self.latest}
        if finish[0] not in self.latest:
            raise GraphError(
                f"graph {self.graph.name!r}: finish point {finish[0]!r} did not run "
                "(the branch leading to it was not taken)"
            )
        return self.latest[finish[0]].state

    # -- scheduling ---------------------------------------------------------------------------

    def start(self, node: str, parents: list[Activation]) -> None:
        self.runs[node] += 1
        if self.runs[node] > self.graph.recursion_limit:
            self.abort(GraphRecursionError(
                f"graph {self.graph.name!r}: node {node!r} would run a {self.runs[node]}th time, "
                f"past recursion_limit={self.graph.recursion_limit}; check the loop's exit condition "
                "or raise recursion_limit"
            ))
            return
        task = asyncio.create_task(self.execute(node, parents, self.runs[node]))
        self.running.add(task)
        task.add_done_callback(self.finished)

    def finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if not self.running:
            self.settled.set()

    def abort(self, error: BaseException) -> None:
        if self.fatal is None:
            self.fatal = error
        self.settled.set()

    async def cancel_running(self) -> None:
        """Cancel nodes still running (after a fail-fast failure) and wait for them to stop."""
        pending = [t for t in self.running if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def execute(self, node: str, parents: list[Activation], number: int) -> None:
        try:
            state, lineage = self.input_for(node, parents)
            task = self.graph.tasks[node]
            if number > 1:
                task = task.with_options(task_run_name=f"{node}[{number}]")
            # A submitted parent is passed as its future: that is what Prefect links to its task run.
            upstream = [parent.future or parent.output for parent in parents]
            if self.limit is None:
                output, future = await self.call(task, state, upstream)
            else:
                async with self.limit:
                    output, future = await self.call(task, state, upstream)
            finished = next(self.ids)
            activation = Activation(
                node, number, finished, output, self.apply(state, output), lineage | {finished},
                future,
            )
            choices = [
                (edge, await self.route(edge, activation.state))
                for edge in self.topology.conditional[node]
            ]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(node, exc)
            return
        self.activations[activation.id] = activation
        self.latest[node] = activation
        self.completed[node] += 1
        if self.sink is not None:
            self.sink.put({node: output})
        self.resolve(node, activation, choices)

    async def call(self, task: Any, state: dict[str, Any], upstream: list[Any]) -> tuple[Any, Any]:
        """Run one node's task: awaited on this loop, or submitted to the task runner."""
        if self.graph.task_runner is None:
            return await task(call_args(state), self.quoted_config, upstream), None
        # Not quoted here: Dask ships a `quote` (a NamedTuple) to the worker as a plain tuple.
        future = task.submit(state, self.config, upstream)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake(_: Any) -> None:  # called on the task runner's thread
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        future.add_done_callback(wake)
        try:
            await done
        except asyncio.CancelledError:
            wrapped = getattr(future, "wrapped_future", None)
            if wrapped is not None and hasattr(wrapped, "cancel"):
                wrapped.cancel()  # best effort: stop the node on the cluster too
            raise
        return future.result(), future  # raises the node's exception

    async def route(self, edge: ConditionalEdge, state: dict[str, Any]) -> list[str]:
        choice = edge.router(state)
        if asyncio.iscoroutine(choice):
            choice = await choice
        return edge.resolve(choice, self.graph.nodes)

    def fail(self, node: str, exc: BaseException) -> None:
        add_step_note(exc, f"in node {node!r} of graph {self.graph.name!r}")
        self.failed[node] = None
        if self.graph.fail_fast or isinstance(exc, GraphError):
            self.abort(exc)
        else:
            self.failures[node] = exc
            self.resolve(node, None, [])

    def resolve(self, node: str, activation: Token, choices: list[tuple[ConditionalEdge, list[str]]]) -> None:
        """`node` finished (or was skipped): pass a token to each node that may follow it."""
        self.resolved[node] = activation
        if activation is None and node not in self.failures:
            self.skipped[node] = None
            if self.sink is not None:
                self.sink.put({SKIPPED_KEY: [node]})
        chosen: set[str] = set()
        targets = list(self.topology.static_targets[node])
        if activation is not None:
            chosen.update(targets)
            for _, picked in choices:
                chosen.update(picked)
        for edge in self.topology.conditional[node]:
            targets += edge.possible_targets(list(self.graph.nodes))
        for target in dict.fromkeys(targets):
            token = activation if target in chosen else None
            if (node, target) in self.topology.back_edges:
                if token is not None:
                    self.reenter(target, token)
            else:
                self.deliver(target, node, token)

    def deliver(self, node: str, parent: str, token: Token) -> None:
        self.tokens[node][parent] = token
        if node in self.started or node in self.resolved:
            return
        parents = self.topology.forward_parents[node]
        if any(p not in self.resolved for p in parents):
            return  # a parent that may still choose this node has not resolved yet
        chosen_by = [t for p in parents if (t := self.tokens[node].get(p)) is not None]
        if chosen_by:
            self.started.add(node)
            self.start(node, sorted(chosen_by, key=lambda a: a.id))
        else:
            self.resolve(node, None, [])

    def reenter(self, node: str, activation: Activation) -> None:
        """A loop goes back to `node`: run it, and its forward region, again."""
        region = self.topology.forward_reach[node]
        for name in region:
            self.resolved.pop(name, None)
            self.started.discard(name)
            self.tokens[name] = {p: t for p, t in self.tokens[name].items() if p not in region}
        self.started.add(node)
        self.start(node, [activation])

    # -- state ---------------------------------------------------------------------------------

    def _merge_order(self, activation_id: int) -> tuple[int, int, int]:
        """A topological order that does not depend on timing: an ancestor's lineage is a strict
        subset of its descendants', so fewer ancestors first; then the order nodes were added."""
        activation = self.activations[activation_id]
        return len(activation.lineage), self.rank[activation.node], activation.number

    def input_for(self, node: str, parents: list[Activation]) -> tuple[dict[str, Any], frozenset[int]]:
        """The state `node` runs on, and the ids of its ancestors."""
        if not parents:
            return dict(self.input), frozenset()
        if len(parents) == 1:
            return parents[0].state, parents[0].lineage
        lineage = frozenset().union(*(p.lineage for p in parents))
        state = dict(self.input)
        writers: dict[str, Activation] = {}
        for ancestor in sorted(lineage, key=self._merge_order):
            written = self.activations[ancestor]
            for key, value in written.output.items():
                if key in self.graph.reducers:
                    state[key] = self.graph.reducers[key](state[key], value) if key in state else value
                    continue
                previous = writers.get(key)
                if previous is not None and previous.id not in written.lineage and state[key] != value:
                    raise StateConflictError(
                        f"graph {self.graph.name!r}: nodes {previous.node!r} and {written.node!r} ran "
                        f"concurrently and wrote different values to state key {key!r} (joined at "
                        f"node {node!r}); declare a reducer, e.g. Graph(reducers={{{key!r}: operator.add}}), "
                        "or write distinct keys"
                    )
                state[key] = value
                writers[key] = written
        return state, lineage

    def apply(self, state: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        """The state after a node: `state` updated with `output` (reducers combine their keys)."""
        reducers = self.graph.reducers
        if not reducers:
            return {**state, **output}
        after = dict(state)
        for key, value in output.items():
            after[key] = reducers[key](after[key], value) if key in reducers and key in after else value
        return after


async def execute(graph: CompiledGraph, input: dict[str, Any], config: RunConfig) -> GraphRun:
    """Run `graph` on `input`; attach its Mermaid picture to the flow run as an artifact."""
    execution = _Execution(graph, input, config)
    try:
        outcome = await execution.run()
    finally:
        if in_flow_run():
            await _report(execution)
    return outcome


async def _report(execution: _Execution) -> None:
    graph = execution.graph
    skipped = [n for n in execution.skipped if execution.runs[n] == 0]
    if skipped:
        get_run_logger().info("Skipped node(s) %s: their branches were not taken", skipped)
    if graph.artifact:
        await acreate_markdown_artifact(
            markdown=_summary(execution, skipped),
            description=f"Graph {graph.name!r}: what ran, what was skipped",
        )


def _summary(execution: _Execution, skipped: list[str]) -> str:
    """Markdown for the flow run's artifact: a table per node, then the Mermaid picture.

    The Prefect UI renders the table; it shows Mermaid as source, which any Mermaid viewer
    (GitHub, mermaid.live) draws, coloured by outcome.
    """
    graph = execution.graph
    rows = ["| node | outcome | runs |", "| --- | --- | --- |"]
    for name in graph.nodes:
        runs = execution.runs[name]
        if name in execution.failed:
            outcome = "failed"
        elif runs > execution.completed[name]:
            outcome = "cancelled"
        elif name in skipped:
            outcome = "skipped (branch not taken)"
        elif runs:
            outcome = "ran"
        else:
            outcome = "did not run"
        rows.append(f"| {name} | {outcome} | {runs} |")
    picture = graph.to_mermaid(
        ran={n: c for n, c in execution.runs.items() if c},
        skipped=skipped,
        failed=list(execution.failed),
    )
    return f"### Graph `{graph.name}`\n\n" + "\n".join(rows) + f"\n\n```mermaid\n{picture}\n```\n"
