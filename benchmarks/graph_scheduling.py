"""Graph scheduling: how close a Graph gets to its critical path, against LangGraph.

Runs, in one process on Prefect's ephemeral API (a temporary PREFECT_HOME of its own):

1. Seeded random layered DAGs of 40 and 100 nodes with heterogeneous async sleeps
   (about 20 % slow nodes sleeping 0.2-0.5 s, the rest 10-80 ms). Shape: one entry node
   feeds layer 1; 8 (40 nodes) or 10 (100 nodes) layers follow, each node with 1-3 parents
   from earlier layers (one always from the layer just before, so a node's layer is its
   depth); one sink joins every node that has no child. Entry and sink count in the node
   total and sleep like the others. Each node writes its own state key, so nothing
   conflicts. On the same DAG it runs:

   - asyncio:   ideal dataflow on plain asyncio (each node awaits its parents' futures,
                then sleeps); the floor any scheduler can reach;
   - ours:      `Graph(name=..., artifact=False)`, nodes as async functions, each node a
                Prefect task run;
                * end-to-end: `await graph.ainvoke(...)` outside any flow run, so each
                  call creates its own flow run (what a user calling a graph sees);
                * in-flow: the same graph built with `subflow=False`, awaited inside one
                  warm outer async `@flow`, so its nodes are task runs of that flow run
                  and no flow run is created per call: the graph's node execution alone
                  (durable, the default there: each node's result persisted; and again
                  with `durable=False`);
                * end-to-end with the default `artifact=True` (an outcome table + Mermaid
                  artifact written to the flow run after the nodes finish);
   - LangGraph: `StateGraph` over a TypedDict with one (Annotated, reducer) key per node,
                the same nodes and edges; a node with several parents is a LangGraph join,
                `add_edge([parents...], node)`, which waits for all of them.

   Three references explain the figures: raw Prefect tasks (the same dataflow written by
   hand, one `Task(cache_policy=NONE, persist_result=False)` per node, in-flow), a
   diagnostic run of our executor with the Prefect tasks swapped for plain coroutines
   (its own scheduling cost), and ours end-to-end with our shared API clients switched
   off (Prefect builds two new clients per flow run, as before `runtime.api_clients`).
   Prints each wall time / the critical path (the longest path of sleep durations),
   LangGraph / ours, and the superstep bound: the sum over supersteps of the slowest node
   in each, which no superstep engine beats, with its spread over 50 seeds of the same
   generator.

2. 1,000 zero-latency nodes (a seeded random layered DAG of the same shape, 20 layers of
   about 50 no-op async nodes): per-node overhead, wall / 1000, for every engine above.

3. With `--seeds N`: the 100-node DAG of each seed 0 .. N-1, run by plain asyncio, ours
   end-to-end and LangGraph only. How much faster a dataflow engine can be than a superstep
   engine depends on the DAG drawn (LangGraph / asyncio is that ceiling), so this prints
   LangGraph / ours beside it for every seed, not for one seed alone.

Every engine is warmed up once per DAG, then measured `--repeat` times (default 3); the
figures are medians (min and max are printed too). Before each run (untimed) it waits until
the API has recorded every task run so far, then idles `--gap` seconds: task-run events are
written by the API's server process on the same two cores after a run returns, and back to
back a new flow run collides with them (503, and Prefect's client retries ~2 s later,
PrefectHQ/prefect#18934). The in-flow figures create no flow run at all. Waiting for the API
is most of the running time: about 20 minutes on a 2-core machine.

    python benchmarks/graph_scheduling.py [--repeat 3] [--gap 0.5] [--seed 7] [--profile]
                                          [--parts 40,100,1000] [--seeds 10]

`--parts` runs only some of the DAGs (40 and 100 sleeping nodes, 1000 zero-latency nodes);
`--parts 1000 --profile` is the quick way to the per-task profile.

`--profile` adds a cProfile of one in-flow run of the 1,000-node graph: own time by
package, this package's functions, and the top functions by own and cumulative time.
"""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: a private home (a shared SQLite database locks), no analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
# A busy 2-core machine can take longer than the default 20 s to start the ephemeral API.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import argparse
import asyncio
import operator
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from prefect import Task, flow
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client

from prefect_beluga import Graph

try:
    from langgraph.graph import END as LG_END
    from langgraph.graph import START as LG_START
    from langgraph.graph import StateGraph
except ImportError:  # pragma: no cover - LangGraph is in the [bench] extra
    StateGraph = None

SLOW_SHARE = 0.2
SLOW = (0.2, 0.5)  # seconds
FAST = (0.010, 0.080)
SIZES = {40: 8, 100: 10}  # nodes: middle layers
NOOP_NODES, NOOP_LAYERS = 1000, 20


# -- the DAG ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dag:
    """A layered DAG: node names in topological order, parents, and sleep per node."""

    nodes: tuple[str, ...]
    parents: dict[str, tuple[str, ...]]
    sleep: dict[str, float]
    layers: int

    @property
    def entry(self) -> str:
        return self.nodes[0]

    @property
    def sink(self) -> str:
        return self.nodes[-1]

    @property
    def edges(self) -> int:
        return sum(len(p) for p in self.parents.values())

    def critical_path(self) -> float:
        """The longest path of sleep durations, entry to sink."""
        finish: dict[str, float] = {}
        for node in self.nodes:
            start = max((finish[p] for p in self.parents[node]), default=0.0)
            finish[node] = start + self.sleep[node]
        return finish[self.sink]

    def superstep_bound(self) -> float:
        """What a superstep engine (LangGraph) cannot beat: a node runs in the superstep
        after its deepest parent (depth = longest hop count from the entry), and each
        superstep lasts as long as its slowest node, so the sum over supersteps of the
        longest sleep in each."""
        depth: dict[str, int] = {}
        longest: dict[int, float] = {}
        for node in self.nodes:
            depth[node] = max((depth[p] + 1 for p in self.parents[node]), default=0)
            longest[depth[node]] = max(longest.get(depth[node], 0.0), self.sleep[node])
        return sum(longest.values())


def random_dag(nodes: int, layers: int, seed: int, *, zero_latency: bool = False) -> Dag:
    """Entry node, `layers` layers holding nodes - 2 nodes, and one sink joining the leaves."""
    rng = random.Random(seed)
    entry, sink = "n0000", f"n{nodes - 1:04d}"
    middle = nodes - 2
    sizes = [middle // layers + (1 if i < middle % layers else 0) for i in range(layers)]
    by_layer: list[list[str]] = [[entry]]
    parents: dict[str, tuple[str, ...]] = {entry: ()}
    index = 1
    for depth, size in enumerate(sizes, start=1):
        layer = []
        earlier = [n for lay in by_layer[1:] for n in lay]  # layers 1 .. depth-1
        for _ in range(size):
            name = f"n{index:04d}"
            index += 1
            if depth == 1:
                chosen = [entry]
            else:
                chosen = [rng.choice(by_layer[depth - 1])]
                extra = rng.randint(0, 2)
                pool = [n for n in earlier if n not in chosen]
                chosen += rng.sample(pool, min(extra, len(pool)))
            parents[name] = tuple(chosen)
            layer.append(name)
        by_layer.append(layer)
    has_child = {p for ps in parents.values() for p in ps}
    parents[sink] = tuple(n for n in parents if n not in has_child)
    order = [n for lay in by_layer for n in lay] + [sink]
    sleep = {}
    for node in order:
        if zero_latency:
            sleep[node] = 0.0
        elif rng.random() < SLOW_SHARE:
            sleep[node] = rng.uniform(*SLOW)
        else:
            sleep[node] = rng.uniform(*FAST)
    return Dag(tuple(order), parents, sleep, layers)


def make_node(name: str, seconds: float) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """The node's work: sleep, then write its own key (a no-op when `seconds` is 0)."""

    if seconds > 0:

        async def node(state: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(seconds)
            return {name: 1}

    else:

        async def node(state: dict[str, Any]) -> dict[str, Any]:
            return {name: 1}

    node.__name__ = node.__qualname__ = name
    return node


# -- the engines ----------------------------------------------------------------------------------


async def run_asyncio(dag: Dag) -> None:
    """Ideal dataflow: a node awaits its parents' futures, sleeps, resolves its own."""
    loop = asyncio.get_running_loop()
    done = {n: loop.create_future() for n in dag.nodes}

    async def node(name: str) -> None:
        for parent in dag.parents[name]:
            await done[parent]
        if dag.sleep[name] > 0:
            await asyncio.sleep(dag.sleep[name])
        done[name].set_result(1)

    await asyncio.gather(*(node(n) for n in dag.nodes))


def raw_prefect_tasks(dag: Dag) -> dict[str, Task]:
    """One plain Prefect async task per node, with the options our node tasks use."""

    def make(name: str, seconds: float) -> Task:
        async def run(upstream: list[dict[str, Any]]) -> dict[str, Any]:
            if seconds > 0:
                await asyncio.sleep(seconds)
            return {name: 1}

        run.__name__ = run.__qualname__ = name
        return Task(run, name=name, task_run_name=name, cache_policy=NONE, persist_result=False)

    return {n: make(n, dag.sleep[n]) for n in dag.nodes}


async def run_raw_prefect(dag: Dag, tasks: dict[str, Task]) -> dict[str, Any]:
    """Dataflow of plain Prefect task runs (inside a flow run): a node awaits its parents'
    futures, then its task run, which gets the parents' outputs (so Prefect records edges)."""
    loop = asyncio.get_running_loop()
    done = {n: loop.create_future() for n in dag.nodes}

    async def node(name: str) -> None:
        upstream = [await done[p] for p in dag.parents[name]]
        done[name].set_result(await tasks[name](upstream))

    await asyncio.gather(*(node(n) for n in dag.nodes))
    return {k: v for f in done.values() for k, v in f.result().items()}


def build_ours(dag: Dag, *, artifact: bool, subflow: bool = True, durable: bool = True) -> Graph:
    graph = Graph(name=f"bench-dag-{len(dag.nodes)}", artifact=artifact, subflow=subflow, durable=durable)
    for node in dag.nodes:
        graph.add_node(node, make_node(node, dag.sleep[node]))
    for node in dag.nodes:
        for parent in dag.parents[node]:
            graph.add_edge(parent, node)
    graph.set_entry_point(dag.entry).set_finish_point(dag.sink)
    graph.compile()
    return graph


def executor_only(dag: Dag) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Diagnostic: our dataflow executor with each node's Prefect task swapped for a plain
    coroutine doing what the task body does (run the node, copy its output dict), outside
    any flow run. What it costs is the executor's own scheduling and state merging.

    It reaches into internals (`CompiledGraph.tasks`, `_executor.execute`); it is not an API.
    """
    from prefect_beluga.core.config import RunConfig
    from prefect_beluga.orchestration._executor import execute

    graph = build_ours(dag, artifact=False).compile()

    def plain(runnable: Any) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def call(state: Any, config: Any, upstream: Any = None) -> dict[str, Any]:
            return dict(await runnable.ainvoke(state.unquote(), config.unquote()))

        return call

    graph.tasks = {name: plain(spec.runnable) for name, spec in graph.nodes.items()}

    async def run() -> dict[str, Any]:
        return (await execute(graph, {"input": "bench"}, RunConfig())).result

    return run


def per_run_clients(graph: Graph, input: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    """Diagnostic: the graph end-to-end with our shared API clients switched off, so Prefect
    builds its two new clients for the flow run (the behaviour before runtime.api_clients)."""
    from contextlib import asynccontextmanager

    from prefect_beluga.orchestration import _runtime as runtime

    @asynccontextmanager
    async def none() -> Any:
        yield

    async def run() -> Any:
        shared, runtime.api_clients = runtime.api_clients, none
        try:
            return await graph.ainvoke(input)
        finally:
            runtime.api_clients = shared

    return run


def build_langgraph(dag: Dag) -> Any:
    # One key per node (distinct keys never conflict in a superstep); "input" carries the
    # graph input. The keys are Annotated with a reducer, as a LangGraph user writing
    # concurrently from parallel branches would (it changes nothing for distinct keys).
    fields: dict[str, Any] = {"input": str}
    fields.update({n: Annotated[int, operator.add] for n in dag.nodes})
    State = TypedDict(f"State{len(dag.nodes)}", fields, total=False)  # type: ignore[misc]
    builder = StateGraph(State)
    for node in dag.nodes:
        builder.add_node(node, make_node(node, dag.sleep[node]))
    builder.add_edge(LG_START, dag.entry)
    for node in dag.nodes:
        parents = list(dag.parents[node])
        if len(parents) == 1:
            builder.add_edge(parents[0], node)
        elif parents:
            builder.add_edge(parents, node)  # a join: waits for every parent
    builder.add_edge(dag.sink, LG_END)
    return builder.compile()


def check(result: dict[str, Any], dag: Dag, who: str) -> None:
    missing = [n for n in dag.nodes if result.get(n) != 1]
    if missing:
        raise AssertionError(f"{who}: nodes {missing[:5]} ... did not write their keys")


class Api:
    """Waits, untimed, until the ephemeral API has recorded every task run started so far.

    Task-run states reach the API as events that its server process (on the same 2 cores)
    writes to SQLite after the run returns. Waiting for them before each timed run keeps
    that work out of the next measurement, and out of the way of the next flow run's
    creation (the 503 + ~2 s client retry of PrefectHQ/prefect#18934).
    """

    def __init__(self) -> None:
        self.expected = 0  # task runs started so far, all completed
        self.waited = 0.0  # seconds spent waiting for the API

    async def drain(self, timeout: float = 300.0) -> None:
        if not self.expected:
            return
        body = {"task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
        start = time.monotonic()
        async with get_client() as client:
            while True:
                response = await client._client.post("/task_runs/count", json=body)
                if response.json() >= self.expected:
                    break
                if time.monotonic() - start > timeout:
                    print(
                        f"  (API still recording task runs after {timeout:.0f} s; going on)",
                        file=sys.stderr,
                        flush=True,
                    )
                    break
                await asyncio.sleep(0.25)
        await asyncio.sleep(0.25)
        self.waited += time.monotonic() - start


API = Api()


class Bench:
    """Warm-up, repeat and time the engines on one DAG."""

    def __init__(self, dag: Dag, repeat: int, gap: float, seed: int = 0) -> None:
        self.dag = dag
        self.seed = seed
        self.repeat = repeat
        self.gap = gap
        self.input = {"input": "bench"}
        self.samples: dict[str, list[float]] = {}

    async def time(self, label: str, call: Callable[[], Awaitable[Any]], *, tasks: bool = False) -> None:
        """Run `call` 1 + repeat times; keep the last `repeat` (`tasks`: one task run per node)."""
        samples = []
        for i in range(self.repeat + 1):  # the first run warms up and is not kept
            await API.drain()  # not timed
            await asyncio.sleep(self.gap)
            start = time.perf_counter()
            result = await call()
            elapsed = time.perf_counter() - start
            if tasks:
                API.expected += len(self.dag.nodes)
            if result is not None:
                check(result, self.dag, label)
            if i:
                samples.append(elapsed)
        self.samples[label] = samples
        print(
            f"  {label:<28} " + " ".join(f"{s:7.3f}" for s in samples) + " s",
            file=sys.stderr,
            flush=True,
        )

    async def run_all(self) -> None:
        dag = self.dag
        print(f"\n{len(dag.nodes)} nodes, {dag.edges} edges:", file=sys.stderr, flush=True)
        await self.time("asyncio", lambda: run_asyncio(dag))
        await self.time("executor only", executor_only(dag))

        ours = build_ours(dag, artifact=False)
        await self.time("ours end-to-end", lambda: ours.ainvoke(self.input), tasks=True)
        await self.time("ours end-to-end, new clients", per_run_clients(ours, self.input), tasks=True)

        inline = build_ours(dag, artifact=False, subflow=False)
        inline_not_durable = build_ours(dag, artifact=False, subflow=False, durable=False)
        raw = raw_prefect_tasks(dag)
        bench = self

        @flow(name=f"bench-outer-{len(dag.nodes)}", persist_result=False, validate_parameters=False)
        async def outer() -> None:
            # Timed inside the flow run: node execution only, no flow-run creation.
            await bench.time("ours in-flow", lambda: inline.ainvoke(bench.input), tasks=True)
            await bench.time("ours in-flow, not durable", lambda: inline_not_durable.ainvoke(bench.input), tasks=True)
            await bench.time("raw Prefect in-flow", lambda: run_raw_prefect(dag, raw), tasks=True)

        await API.drain()
        await outer()

        default = build_ours(dag, artifact=True)
        await self.time("ours end-to-end, artifact", lambda: default.ainvoke(self.input), tasks=True)

        await self.time_langgraph()

    async def run_core(self) -> None:
        """Only the engines compared across seeds: ideal, ours end-to-end, LangGraph."""
        dag = self.dag
        await self.time("asyncio", lambda: run_asyncio(dag))
        ours = build_ours(dag, artifact=False)
        await self.time("ours end-to-end", lambda: ours.ainvoke(self.input), tasks=True)
        await self.time_langgraph()

    async def time_langgraph(self) -> None:
        if StateGraph is None:
            return
        lang = build_langgraph(self.dag)
        config = {"recursion_limit": 10 * (self.dag.layers + 3)}
        await self.time("LangGraph", lambda: lang.ainvoke(self.input, config))

    def median(self, label: str) -> float:
        return statistics.median(self.samples[label])


LABELS = {
    "asyncio": "plain asyncio dataflow (ideal)",
    "executor only": "diagnostic: our executor, plain coroutines instead of Prefect tasks",
    "ours end-to-end": "ours, end-to-end (own flow run), artifact=False",
    "ours end-to-end, new clients": "diagnostic: ours end-to-end, two new API clients per run (before)",
    "ours in-flow": "ours, in-flow (subflow=False in a warm flow run), artifact=False",
    "ours in-flow, not durable": "ours, in-flow as above, durable=False (no record persisted per node)",
    "ours end-to-end, artifact": "ours, end-to-end, artifact=True (default)",
    "raw Prefect in-flow": "reference: raw Prefect tasks, same dataflow, in-flow",
    "LangGraph": "LangGraph StateGraph (supersteps)",
}


def report_latency(benches: list[Bench], seed: int) -> None:
    print("\n### Random layered DAGs with sleeping nodes (median of runs; wall / critical path)\n")
    head = "| engine | " + " | ".join(f"{len(b.dag.nodes)} nodes: wall s | / critical path" for b in benches) + " |"
    print(head)
    print("| --- |" + " ---: | ---: |" * len(benches))
    print("| critical path | " + " | ".join(f"{b.dag.critical_path():.3f} | 1.000x" for b in benches) + " |")
    for label, title in LABELS.items():
        if not all(label in b.samples for b in benches):
            continue
        cells = []
        for b in benches:
            m = b.median(label)
            cells.append(f"{m:.3f} | {m / b.dag.critical_path():.3f}x")
        print(f"| {title} | " + " | ".join(cells) + " |")
    print(
        "| superstep bound (no LangGraph overhead; computed) | "
        + " | ".join(
            f"{b.dag.superstep_bound():.3f} | {b.dag.superstep_bound() / b.dag.critical_path():.3f}x" for b in benches
        )
        + " |"
    )
    if all("LangGraph" in b.samples for b in benches):
        print()
        print("| ratio | " + " | ".join(f"{len(b.dag.nodes)} nodes" for b in benches) + " |")
        print("| --- |" + " ---: |" * len(benches))
        for label in ("ours end-to-end", "ours in-flow", "asyncio"):
            print(
                f"| LangGraph wall / {LABELS[label]} | "
                + " | ".join(f"{b.median('LangGraph') / b.median(label):.2f}x" for b in benches)
                + " |"
            )
    # How much a dataflow scheduler can gain over supersteps depends on the DAG drawn: the
    # same generator over 50 seeds (computed, nothing run).
    print()
    for b in benches:
        nodes, layers = len(b.dag.nodes), b.dag.layers
        gains = sorted(
            (d.superstep_bound() / d.critical_path()) for d in (random_dag(nodes, layers, other) for other in range(50))
        )
        rank = sum(g < b.dag.superstep_bound() / b.dag.critical_path() for g in gains)
        print(
            f"{nodes} nodes: superstep bound / critical path over seeds 0-49: median "
            f"{statistics.median(gains):.2f}x, range {gains[0]:.2f}x-{gains[-1]:.2f}x; "
            f"seed {seed} ({b.dag.superstep_bound() / b.dag.critical_path():.2f}x) is above "
            f"{rank} of 50"
        )
    for b in benches:
        spread = ", ".join(f"{label} {min(s):.3f}-{max(s):.3f}" for label, s in b.samples.items())
        print(f"\n{len(b.dag.nodes)} nodes ({b.dag.edges} edges, {b.dag.layers} middle layers), min-max s: {spread}")


def report_overhead(bench: Bench) -> None:
    n = len(bench.dag.nodes)
    print(
        f"\n### {n} zero-latency nodes ({bench.dag.edges} edges, {bench.dag.layers} middle layers): "
        "per-node overhead (median wall / nodes)\n"
    )
    print("| engine | wall s | ms / node |")
    print("| --- | ---: | ---: |")
    for label, title in LABELS.items():
        if label in bench.samples:
            m = bench.median(label)
            print(f"| {title} | {m:.3f} | {m / n * 1e3:.2f} |")
    raw = bench.median("raw Prefect in-flow")
    print(
        f"\nours in-flow / raw Prefect tasks in-flow: {bench.median('ours in-flow') / raw:.2f}x durable (the "
        f"default), {bench.median('ours in-flow, not durable') / raw:.2f}x durable=False"
    )
    if "LangGraph" in bench.samples:
        print(
            f"ours in-flow / LangGraph per node: "
            f"{bench.median('ours in-flow') / bench.median('LangGraph'):.1f}x; "
            f"ours end-to-end / LangGraph: "
            f"{bench.median('ours end-to-end') / bench.median('LangGraph'):.1f}x"
        )
    spread = ", ".join(f"{label} {min(s):.3f}-{max(s):.3f}" for label, s in bench.samples.items())
    print(f"\nmin-max s: {spread}")


def report_seeds(benches: list[Bench]) -> None:
    """One row per seed: how much of what dataflow can gain over supersteps on that DAG we get."""
    nodes = len(benches[0].dag.nodes)
    print(
        f"\n### {nodes} nodes, seeds {benches[0].seed}-{benches[-1].seed}: "
        "ours end-to-end against LangGraph on each seed's DAG (medians)\n"
    )
    print(
        "| seed | critical path s | superstep bound | asyncio | ours end-to-end | LangGraph "
        "| LangGraph / ours | LangGraph / asyncio (the most any engine gets) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios = []
    for b in benches:
        cp = b.dag.critical_path()
        lang, ours, ideal = b.median("LangGraph"), b.median("ours end-to-end"), b.median("asyncio")
        ratios.append(lang / ours)
        print(
            f"| {b.seed} | {cp:.3f} | {b.dag.superstep_bound() / cp:.3f}x | {ideal / cp:.3f}x "
            f"| {ours / cp:.3f}x | {lang / cp:.3f}x | **{lang / ours:.2f}x** | {lang / ideal:.2f}x |"
        )
    reached = sum(r >= 1.75 for r in ratios)
    print(
        f"\nLangGraph / ours over {len(ratios)} seeds: median {statistics.median(ratios):.2f}x, "
        f"range {min(ratios):.2f}x-{max(ratios):.2f}x; >= 1.75x on {reached} of {len(ratios)}"
    )


async def profile(dag: Dag, top: int) -> None:
    """cProfile one warm in-flow run of `dag` (no flow-run creation in the profile)."""
    import cProfile
    import pstats

    graph = build_ours(dag, artifact=False, subflow=False)

    @flow(name="bench-profile", persist_result=False, validate_parameters=False)
    async def outer() -> None:
        await graph.ainvoke({"input": "bench"})  # warm-up
        API.expected += len(dag.nodes)
        await API.drain()
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        await graph.ainvoke({"input": "bench"})
        profiler.disable()
        elapsed = time.perf_counter() - start
        print(
            f"\n### Profile: one in-flow run of {len(dag.nodes)} no-op nodes, {elapsed:.2f} s "
            f"under cProfile ({elapsed / len(dag.nodes) * 1e3:.1f} ms/node)\n"
        )
        stats = pstats.Stats(profiler, stream=sys.stdout)
        total = sum(tt for _, _, tt, _, _ in stats.stats.values())
        own: dict[str, float] = {}
        for (file, _, function), (_, _, tt, _, _) in stats.stats.items():
            if "prefect_beluga" in file:
                group = "prefect_beluga (executor, graph, tasks, the node functions)"
            elif "/prefect/" in file:
                group = "prefect (task engine, events, states, results, context)"
            elif "pydantic" in file or "pydantic" in function or "SchemaValidator" in function:
                group = "pydantic (Prefect's models)"
            elif "urandom" in function or "lstat" in function or "release" in function:
                group = "GIL released in urandom/lstat/lock: other threads (Prefect's events worker) run"
            else:
                group = "other (asyncio, stdlib, pendulum, builtins)"
            own[group] = own.get(group, 0.0) + tt
        print("| where the time goes (own time) | s | share |")
        print("| --- | ---: | ---: |")
        for group, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
            print(f"| {group} | {seconds:.2f} | {seconds / total:.0%} |")
        ours = {
            f"{function} ({file.rsplit('/', 1)[-1]}:{line})": (nc, tt, ct)
            for (file, line, function), (_, nc, tt, ct, _) in stats.stats.items()
            if "prefect_beluga" in file
        }
        print("\n| prefect_beluga function | calls | own s | cumulative s |")
        print("| --- | ---: | ---: | ---: |")
        for name, (nc, tt, ct) in sorted(ours.items(), key=lambda kv: -kv[1][1])[:12]:
            print(f"| {name} | {nc} | {tt:.3f} | {ct:.3f} |")
        print()
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)

    await outer()


def busy_retries() -> int:
    """503s (SQLite busy) that our shared API client retried itself, in this process."""
    from prefect_beluga.orchestration import _api_clients as clients

    return sum(
        getattr(context.client._client._transport, "retried", 0)
        for by_api in clients._async_clients.values()
        for context in by_api.values()
    )


async def main_async(args: argparse.Namespace) -> None:
    if StateGraph is None:
        print("LangGraph is not installed (pip install -e '.[bench]'): its rows are left out", file=sys.stderr)
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    unknown = parts - {*SIZES, NOOP_NODES}
    if unknown:
        raise SystemExit(f"--parts: unknown size(s) {sorted(unknown)}; choose from 40, 100, 1000")
    load_before = os.getloadavg()
    benches = []
    for nodes, layers in SIZES.items():
        if nodes not in parts:
            continue
        bench = Bench(random_dag(nodes, layers, args.seed), args.repeat, args.gap)
        await bench.run_all()
        benches.append(bench)
    noop = Bench(random_dag(NOOP_NODES, NOOP_LAYERS, args.seed, zero_latency=True), args.repeat, args.gap)
    if NOOP_NODES in parts:
        await noop.run_all()
    spread = []
    for seed in range(args.seeds):
        print(f"\nseed {seed}:", file=sys.stderr, flush=True)
        bench = Bench(random_dag(100, SIZES[100], seed), args.repeat, args.gap, seed)
        await bench.run_core()
        spread.append(bench)

    from importlib.metadata import PackageNotFoundError, version

    try:
        langgraph_version = version("langgraph")
    except PackageNotFoundError:
        langgraph_version = "not installed"

    seeds = f"seeds 0-{args.seeds - 1}" if args.seeds and not (benches or noop.samples) else f"seed {args.seed}"
    print(f"\n## Graph scheduling ({seeds}, {args.repeat} runs after a warm-up, medians)")
    print(
        f"\nPrefect {version('prefect')}, LangGraph {langgraph_version}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load average "
        f"before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    if benches:
        report_latency(benches, args.seed)
    if noop.samples:
        report_overhead(noop)
    if spread and StateGraph is not None:
        report_seeds(spread)
    print(f"\nRetryable 503s from the API absorbed by our client's fast retry (BusyRetryTransport): {busy_retries()}")
    if args.profile:
        await API.drain()
        await profile(noop.dag, 35)
    print(f"\n(untimed waits for the API to record task runs: {API.waited:.0f} s in all)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per engine (default 3)")
    parser.add_argument(
        "--gap",
        type=float,
        default=0.5,
        help="idle seconds before each run, after the API has recorded the "
        "previous runs' task runs; not timed (default 0.5)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the random DAGs (default 7)")
    parser.add_argument(
        "--parts",
        default="40,100,1000",
        help="which DAGs to run: 40, 100 (sleeping nodes), 1000 (zero-latency); comma-separated (default all)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=0,
        help="also run the 100-node DAG of seeds 0 .. SEEDS-1 (asyncio, ours "
        "end-to-end, LangGraph only) and print LangGraph / ours per seed; "
        "use --parts '' for only this",
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile one in-flow run of the 1,000-node graph")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
