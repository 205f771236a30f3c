"""The dataflow executor: runs a compiled graph's nodes as Prefect task runs.

A node starts as soon as every forward parent has *resolved* — finished, or been skipped
because a router did not choose it — and at least one of them chose it. There are no
supersteps: a slow branch never holds back an independent one. A back edge (a loop) re-runs
its target, and everything forward-reachable from it, as new task runs named `node[2]`, ...

A node's input is built from the outputs of its ancestors in an order that does not depend on
timing (`_graph_state` says how).

A node that does not run is reported `{"__skipped__": [node]}` on the stream once, and only
if it does not run in that run: at once when nothing can run it later; for a node in a loop's
region (a later pass may run it), when the run ends, if no pass ran it.

The run ends when no node is left to run; its result is described in the graph module:
the finish points that ran and the nodes whose router chose `END`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prefect.artifacts import acreate_markdown_artifact
from prefect.logging import get_run_logger
from prefect.utilities.annotations import quote

from prefect_beluga.core import events
from prefect_beluga.core.config import RunConfig
from prefect_beluga.core.errors import (
    GraphError,
    GraphNodesFailed,
    GraphRecursionError,
    add_step_note,
)
from prefect_beluga.core.event_stream import StreamSink
from prefect_beluga.core.streaming import stop_signal
from prefect_beluga.orchestration._graph_state import Activation, NodeStates
from prefect_beluga.orchestration._mermaid import graph_to_mermaid
from prefect_beluga.orchestration._runtime import in_flow_run
from prefect_beluga.orchestration._stream import (
    absorb_stop,
    raise_if_cancelled,
    raise_if_stopped,
    stop_requested,
)
from prefect_beluga.orchestration._tasks import StepCall, call_args, runnable_task
from prefect_beluga.orchestration._topology import END, ConditionalEdge, GraphSpec, Topology


class CompiledGraphLike(Protocol):
    """What the executor runs (a `graph.CompiledGraph`): the spec, its shape, each node's task."""

    spec: GraphSpec
    topology: Topology
    tasks: Mapping[str, Any]


@dataclass(frozen=True)
class GraphRun:
    """The outcome of one graph invocation.

    Attributes:
        result: What `invoke` returns: the state the run ended with, or a dict of them keyed
            by the nodes that ended it (see the graph module).
        ran: How many times each node ran.
        skipped: Nodes on branches that were not taken.
    """

    result: Any
    ran: Mapping[str, int]
    skipped: tuple[str, ...]


Token = Activation | None  # None: the parent resolved without choosing this node


class NodeTasks(Mapping[str, StepCall]):
    """Each node's Prefect task, made when the node first runs: making a Prefect task reads
    its function's source (about 1-2 ms), which would make compiling a 10,000-node graph
    take many seconds for nodes a run may never reach."""

    def __init__(self, spec: GraphSpec) -> None:
        self._spec = spec
        self._made: dict[str, StepCall] = {}

    def __getitem__(self, name: str) -> StepCall:
        task = self._made.get(name)
        if task is None:
            node = self._spec.nodes[name]
            task = self._made[name] = runnable_task(
                node.runnable,
                name=name,
                where=f"node {name!r} of graph {self._spec.name!r}",
                policy=node.policy,
                tags=node.tags,
                cache=node.cache,
            )
        return task

    def __iter__(self) -> Iterator[str]:
        return iter(self._spec.nodes)

    def __len__(self) -> int:
        return len(self._spec.nodes)


class _Execution:
    """The mutable state of one graph invocation."""

    def __init__(self, graph: CompiledGraphLike, input: dict[str, Any], config: RunConfig) -> None:
        self.graph = graph
        self.spec = spec = graph.spec
        self.topology = graph.topology
        self.rank = graph.topology.order  # a topological order; ties: order added
        self.config = config
        # Passed quoted, like the state: Prefect need not walk (and rebuild) it on every call.
        self.quoted_config = quote(config)
        limit = config.max_concurrency or spec.max_concurrency
        self.limit = asyncio.Semaphore(limit) if limit else None
        self.sink = StreamSink.current(graph)
        self.ids = itertools.count()
        self.states = NodeStates(spec.name, input, spec.reducers, self.rank)
        self.latest: dict[str, Activation] = {}
        self.ended: dict[str, Activation] = {}  # nodes whose router chose END, latest run
        self.runs: Counter[str] = Counter()
        self.started: set[str] = set()  # in the current pass over the node's region
        self.resolved: dict[str, Token] = {}
        self.to_resolve: deque[tuple[str, Token, list[tuple[ConditionalEdge, list[str]]]]] = deque()
        self.resolving = False
        self.tokens: dict[str, dict[str, Token]] = {name: {} for name in spec.nodes}
        self.skipped: dict[str, None] = {}
        # Nodes a loop may run again: one skipped on a pass is reported only at the end, if no
        # later pass ran it (see `_resolve_one`).
        self.in_loops: frozenset[str] = frozenset().union(*graph.topology.forward_reach.values())
        self.failures: dict[str, BaseException] = {}  # with fail_fast=False
        self.failed: dict[str, None] = {}  # every node that failed
        self.completed: Counter[str] = Counter()
        self.running: set[asyncio.Task[None]] = set()
        self.fatal: BaseException | None = None
        self.settled = asyncio.Event()

    async def run(self) -> GraphRun:
        for entry in self.spec.entry_points:
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
                f"graph {self.spec.name!r}: {len(self.failures)} node(s) failed: {listing}",
                dict(self.failures),
            ) from next(iter(self.failures.values()))
        skipped_in_loops = [n for n in skipped if n in self.in_loops]
        if self.sink is not None and skipped_in_loops:
            self.sink.put({events.SKIPPED: skipped_in_loops})  # no pass of their loops ran them
        return GraphRun(result=self.result(), ran=dict(self.runs), skipped=skipped)

    def result(self) -> Any:
        """The state the run ended with: see "Ending a run" in the graph module."""
        finish = self.spec.finish_points
        enders = [n for n in finish if n in self.latest]
        enders += [n for n in self.ended if n not in enders]
        if not enders:
            raise GraphError(
                f"graph {self.spec.name!r}: the run ended without reaching a finish point "
                f"{list(finish)} or a router choosing END (the branches leading to them were not taken)"
            )
        if len(finish) > 1:
            return {name: (self.latest[name] if name in finish else self.ended[name]).state for name in enders}
        if finish[0] in self.latest:
            return self.latest[finish[0]].state
        last = max((self.ended[n] for n in enders), key=lambda a: (a.depth, self.rank[a.node]))
        return last.state

    # -- scheduling ---------------------------------------------------------------------------

    def start(self, node: str, parents: list[Activation]) -> None:
        self.runs[node] += 1
        if self.runs[node] > self.spec.recursion_limit:
            self.abort(GraphRecursionError(
                f"graph {self.spec.name!r}: node {node!r} would run a {self.runs[node]}th time, "
                f"past recursion_limit={self.spec.recursion_limit}; check the loop's exit condition "
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
        """Cancel nodes still running (after a fail-fast failure) and wait for them to stop.

        When the caller left the stream, the nodes are already stopping (each ends Cancelled):
        they are waited for, not cancelled, so none is cut while Prefect records its state."""
        pending = [t for t in self.running if not t.done()]
        stopping = stop_requested() is not None
        for task in pending:
            if not stopping:
                task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def execute(self, node: str, parents: list[Activation], number: int) -> None:
        try:
            raise_if_stopped()  # the caller left the stream: start nothing more
            state = self.states.input_for(node, parents)
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
                node, number, finished, output, self.states.apply(state, output),
                tuple(p.id for p in parents), 1 + max((p.depth for p in parents), default=-1), future,
            )
            choices = [
                (edge, await self.route(edge, activation.state))
                for edge in self.topology.conditional[node]
            ]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if stop_requested() is not None:
                self.abort(exc)  # cancelled, not failed: the flow run ends Cancelled
                return
            self.fail(node, exc)
            return
        self.states.add(activation)
        self.latest[node] = activation
        if any(END in picked for _, picked in choices):
            self.ended.pop(node, None)
            self.ended[node] = activation
        self.completed[node] += 1
        if self.sink is not None:
            self.sink.put({node: output})
        self.resolve(node, activation, choices)

    async def call(self, task: Any, state: dict[str, Any], upstream: list[Any]) -> tuple[Any, Any]:
        """Run one node's task: awaited on this loop, or submitted to the task runner."""
        if self.spec.task_runner is None:
            return await task(call_args(state), self.quoted_config, upstream), None
        # A caller leaving the stream cancels this wait: at once for a node on another process
        # (Dask: no stop signal there), else once the node, in its worker thread, has stopped.
        signal = stop_signal()
        future: Any = None
        try:
            with signal.section() if signal is not None else contextlib.nullcontext():
                # Not quoted here: Dask ships a `quote` (a NamedTuple) to the worker as a plain tuple.
                future = task.submit(state, self.config, upstream)
                loop = asyncio.get_running_loop()
                done = loop.create_future()

                def wake(_: Any) -> None:  # called on the task runner's thread
                    loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

                future.add_done_callback(wake)
                await done
        except asyncio.CancelledError:
            wrapped = getattr(future, "wrapped_future", None)
            if wrapped is not None and hasattr(wrapped, "cancel"):
                wrapped.cancel()  # best effort: stop the node on the cluster too
            stopped = absorb_stop()
            if stopped is not None:
                raise stopped from None  # the node is cancelled: the run ends Cancelled
            raise
        return raise_if_cancelled(future.result()), future  # raises the node's exception

    async def route(self, edge: ConditionalEdge, state: dict[str, Any]) -> list[str]:
        choice = edge.router(state)
        if asyncio.iscoroutine(choice):
            choice = await choice
        return edge.resolve(choice, self.spec.nodes)

    def fail(self, node: str, exc: BaseException) -> None:
        add_step_note(exc, f"in node {node!r} of graph {self.spec.name!r}")
        self.failed[node] = None
        if self.spec.fail_fast or isinstance(exc, GraphError):
            self.abort(exc)
        else:
            self.failures[node] = exc
            self.resolve(node, None, [])

    def resolve(self, node: str, activation: Token, choices: list[tuple[ConditionalEdge, list[str]]]) -> None:
        """`node` finished (or was skipped): pass a token to each node that may follow it.

        Skips spread through a queue, not recursion, so a skipped branch may be any length."""
        self.to_resolve.append((node, activation, choices))
        if self.resolving:
            return
        self.resolving = True
        try:
            while self.to_resolve:
                self._resolve_one(*self.to_resolve.popleft())
        finally:
            self.resolving = False

    def _resolve_one(self, node: str, activation: Token, choices: list[tuple[ConditionalEdge, list[str]]]) -> None:
        self.resolved[node] = activation
        if activation is None and node not in self.failures:
            self.skipped[node] = None
            # Reported at once when nothing can run it later; in a loop, at the end (see `run`).
            if self.sink is not None and node not in self.in_loops:
                self.sink.put({events.SKIPPED: [node]})
        chosen: set[str] = set()
        targets = list(self.topology.static_targets[node])
        if activation is not None:
            chosen.update(targets)
            for _, picked in choices:
                chosen.update(picked)
        if self.topology.conditional[node]:
            targets = self.topology.successors[node]
        for target in targets:
            token = activation if target in chosen else None
            if (node, target) in self.topology.back_edges:
                if token is not None:
                    self.reenter(target, token)
            else:
                self.deliver(target, node, token)

    def deliver(self, node: str, parent: str, token: Token) -> None:
        if parent not in self.resolved:
            return  # a loop back into `parent`'s region just superseded this pass
        self.tokens[node][parent] = token
        if node in self.started or node in self.resolved:
            return
        tokens = self.tokens[node]  # one per forward parent resolved in this pass
        if len(tokens) < len(self.topology.forward_parents[node]):
            return  # a parent that may still choose this node has not resolved yet
        chosen_by = [t for t in tokens.values() if t is not None]
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


async def execute(graph: CompiledGraphLike, input: dict[str, Any], config: RunConfig) -> GraphRun:
    """Run `graph` on `input`; attach its Mermaid picture to the flow run as an artifact."""
    execution = _Execution(graph, input, config)
    try:
        outcome = await execution.run()
    finally:
        if in_flow_run():
            await _report(execution)
    return outcome


async def _report(execution: _Execution) -> None:
    spec = execution.spec
    skipped = [n for n in execution.skipped if execution.runs[n] == 0]
    if skipped:
        get_run_logger().info("Skipped node(s) %s: their branches were not taken", skipped)
    if spec.artifact:
        await acreate_markdown_artifact(
            markdown=_summary(execution, skipped),
            description=f"Graph {spec.name!r}: what ran, what was skipped",
        )


def _summary(execution: _Execution, skipped: list[str]) -> str:
    """Markdown for the flow run's artifact: a table per node, then the Mermaid picture.

    The Prefect UI renders the table; it shows Mermaid as source, which any Mermaid viewer
    (GitHub, mermaid.live) draws, coloured by outcome.
    """
    spec = execution.spec
    rows = ["| node | outcome | runs |", "| --- | --- | --- |"]
    for name in spec.nodes:
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
    picture = graph_to_mermaid(
        spec,
        ran={n: c for n, c in execution.runs.items() if c},
        skipped=skipped,
        failed=list(execution.failed),
    )
    return f"### Graph `{spec.name}`\n\n" + "\n".join(rows) + f"\n\n```mermaid\n{picture}\n```\n"
