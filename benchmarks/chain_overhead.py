"""What a Chain costs on top of the same work written as a raw Prefect flow.

Runs, in one process on Prefect's ephemeral API (a temporary PREFECT_HOME of its own):

- ours: `await Chain([step] * n).ainvoke(...)`, n trivial async steps;
- raw:  an `@flow` async function awaiting n `@task(cache_policy=NONE, persist_result=False)`
        async tasks doing the same work, each fed the previous one's output;
- lean: the same raw flow with the flow options a Chain's flow uses
        (`validate_parameters=False, persist_result=False`), to separate those from the rest;

for n = 3 and n = 13 steps, interleaved (ours and raw alternate, in rotating order, so drift
lands on both sides alike), after a warm-up. Prints median, a trimmed mean (the middle 80 %),
the spike count, the ratio ours/raw and the cost of each extra step.

Between runs the benchmark idles `--gap` seconds (not timed). Back to back, the ephemeral
SQLite API is still writing the previous run's task-run events when the next flow run is
created; it answers 503 and Prefect's client retries ~2 s later, in about half the runs, for
raw Prefect and Chain alike (PrefectHQ/prefect#18934). `--gap 0` shows that.

    python benchmarks/chain_overhead.py [--repeat 40] [--gap 0.5] [--profile]

`--compose` measures instead what composing inside a user's own `@flow` costs: a 3-step chain
and a 3-node graph, called 10 times each (after a warm-up, `--gap` idle seconds before each
call, not timed, in every row alike) at top level, as a subflow of a user's flow run, and with
`subflow=False` inside it; it prints the medians and the ratio inside / top level side by side,
and how many 503s the shared client absorbed. `--server sqlite` / `--server postgresql` runs it
against a `prefect server` on SQLite / on a throwaway PostgreSQL
(`prefect_beluga.testing.PrefectServer`) instead of the embedded API.

    python benchmarks/chain_overhead.py --compose [--calls 10] [--server embedded|sqlite|postgresql]

`--durable` measures what durability (docs/durability.md) costs a 3-step trivial chain inside
one warm user `@flow` run: durable (the default) and `durable=False`, as a subflow and with
`subflow=False`, interleaved, `--gap` idle seconds before each call (not timed), 3 warm-up
rounds then `--calls` timed ones; it prints median and min per row and the ratio durable / off.

    python benchmarks/chain_overhead.py --durable [--calls 20] [--gap 0.3]
"""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: a private home (a shared SQLite database locks), no analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # busy CI

import argparse
import asyncio
import functools
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from prefect_beluga import Chain, Graph

SMALL, LARGE = 3, 13
SPIKE_SECONDS = 1.0  # a run this much slower than the median is an API retry spike


async def add_one(state: dict[str, Any]) -> dict[str, Any]:
    """The trivial step: the work itself costs nothing, so what is measured is overhead."""
    return {"count": state["count"] + 1}


def our_chain(steps: int) -> Chain:
    return Chain([add_one] * steps, name=f"bench-chain-{steps}")


@task(name="add_one", cache_policy=NONE, persist_result=False)
async def raw_add_one(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "count": state["count"] + 1}


def raw_flow(steps: int, lean: bool = False):
    options = {"validate_parameters": False, "persist_result": False} if lean else {}

    @flow(name=f"bench-{'lean' if lean else 'raw'}-{steps}", **options)
    async def raw(state: dict[str, Any]) -> dict[str, Any]:
        for _ in range(steps):
            state = await raw_add_one(state)
        return state

    return raw


SIDES = {
    "ours": "Chain.ainvoke",
    "raw": "raw @flow + @task",
    "lean": "raw, lean flow options",
}


def trimmed_mean(samples: list[float], cut: float = 0.1) -> float:
    ordered = sorted(samples)
    k = int(len(ordered) * cut)
    kept = ordered[k : len(ordered) - k] or ordered
    return statistics.fmean(kept)


async def measure(repeat: int, gap: float) -> dict[str, list[float]]:
    chains = {n: our_chain(n) for n in (SMALL, LARGE)}
    raws = {n: raw_flow(n) for n in (SMALL, LARGE)}
    leans = {n: raw_flow(n, lean=True) for n in (SMALL, LARGE)}
    runners: dict[str, Callable[[], Awaitable[Any]]] = {}
    for n in (SMALL, LARGE):
        runners[f"ours-{n}"] = lambda n=n: chains[n].ainvoke({"count": 0})
        runners[f"raw-{n}"] = lambda n=n: raws[n]({"count": 0})
        runners[f"lean-{n}"] = lambda n=n: leans[n]({"count": 0})

    async def run(key: str) -> float:
        start = time.perf_counter()
        result = await runners[key]()
        elapsed = time.perf_counter() - start
        steps = int(key.split("-")[1])
        assert result["count"] == steps, (key, result)
        await asyncio.sleep(gap)  # let the API drain this run's events (not timed)
        return elapsed

    for key in runners:  # warm-up: API started, flows registered, clients open
        for _ in range(3):
            await run(key)

    samples: dict[str, list[float]] = {key: [] for key in runners}
    keys = list(runners)
    for i in range(repeat):
        shift = i % len(keys)  # rotate the order each round
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(await run(key))
        if (i + 1) % 10 == 0:
            print(f"  round {i + 1}/{repeat}", file=sys.stderr, flush=True)
    return samples


def report(samples: dict[str, list[float]], repeat: int, gap: float) -> None:
    median = {k: statistics.median(v) for k, v in samples.items()}
    trimmed = {k: trimmed_mean(v) for k, v in samples.items()}
    spikes = {k: sum(s > median[k] + SPIKE_SECONDS for s in v) for k, v in samples.items()}

    print(
        f"\nChain overhead: {repeat} interleaved runs each, {gap} s idle between runs "
        f"(ms per end-to-end run)\n"
    )
    print("| run | median | trimmed mean (middle 80%) | min | spikes > median + 1 s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for n in (SMALL, LARGE):
        for side, title in SIDES.items():
            key = f"{side}-{n}"
            label = f"{title}, {n} steps"
            print(
                f"| {label} | {median[key] * 1e3:.0f} | {trimmed[key] * 1e3:.0f} | "
                f"{min(samples[key]) * 1e3:.0f} | {spikes[key]} |"
            )

    print("\n| figure | median | trimmed mean |")
    print("| --- | ---: | ---: |")
    for n in (SMALL, LARGE):
        for other in ("raw", "lean"):
            print(
                f"| ratio ours/{other}, {n} steps | "
                f"{median[f'ours-{n}'] / median[f'{other}-{n}']:.2f}x | "
                f"{trimmed[f'ours-{n}'] / trimmed[f'{other}-{n}']:.2f}x |"
            )
    extra = LARGE - SMALL
    for side in SIDES:
        per_step_median = (median[f"{side}-{LARGE}"] - median[f"{side}-{SMALL}"]) / extra
        per_step_trimmed = (trimmed[f"{side}-{LARGE}"] - trimmed[f"{side}-{SMALL}"]) / extra
        print(
            f"| per extra step, {side} ({SMALL} -> {LARGE} steps) | {per_step_median * 1e3:.1f} ms | "
            f"{per_step_trimmed * 1e3:.1f} ms |"
        )


async def profile(runs: int, gap: float) -> None:
    """cProfile `runs` warm 3-step chain runs, and as many raw ones, to see where time goes.

    The idle `gap` between runs is outside the profile.
    """
    import cProfile
    import pstats

    chain, raw = our_chain(SMALL), raw_flow(SMALL)
    for _ in range(3):
        await chain.ainvoke({"count": 0})
        await raw({"count": 0})
    for label, call in (("ours", lambda: chain.ainvoke({"count": 0})), ("raw", lambda: raw({"count": 0}))):
        profiler = cProfile.Profile()
        for _ in range(runs):
            profiler.enable()
            await call()
            profiler.disable()
            await asyncio.sleep(gap)
        print(f"\n=== profile: {label}, {runs} runs of {SMALL} steps (top 40 by cumulative time)")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def compose_graph(subflow: bool) -> Graph:
    """A 3-node graph: `a`, then `b` and `c` at the same time."""

    async def a(state: dict[str, Any]) -> dict[str, Any]:
        return {"count": state["count"] + 1}

    async def b(state: dict[str, Any]) -> dict[str, Any]:
        return {"b": state["count"]}

    async def c(state: dict[str, Any]) -> dict[str, Any]:
        return {"c": state["count"]}

    graph = Graph(name="bench-graph", subflow=subflow)
    for name, fn in (("a", a), ("b", b), ("c", c)):
        graph.add_node(name, fn)
    graph.add_edge("a", "b")
    graph.add_edge("a", "c")
    graph.set_entry_point("a")
    graph.set_finish_point(["b", "c"])
    return graph


COMPOSE_ROWS = {
    "top": "top level",
    "subflow": "inside a user's flow, as a subflow (default)",
    "inline": "inside a user's flow, subflow=False",
}


async def measure_compose(
    calls: int, prefect_retries: Any, gap: float
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, int]]]:
    """Per kind (chain, graph) and row: the seconds of each of `calls` calls, and the 503s
    during the row: absorbed by the shared client / retried by Prefect's own client (2 s)."""
    from prefect_beluga.orchestration._api_clients import shared_transport

    kinds = {
        "chain": (Chain([add_one] * SMALL, name="bench-chain"),
                  Chain([add_one] * SMALL, name="bench-chain", subflow=False)),
        "graph": (compose_graph(True), compose_graph(False)),
    }
    samples: dict[str, dict[str, list[float]]] = {k: {r: [] for r in COMPOSE_ROWS} for k in kinds}
    absorbed: dict[str, dict[str, str]] = {k: {} for k in kinds}

    async def timed(call: Callable[[], Awaitable[Any]]) -> float:
        await asyncio.sleep(gap)  # let the API drain the last call's events (not timed)
        start = time.perf_counter()
        await call()
        return time.perf_counter() - start

    @flow(name="bench-user-flow")
    async def user_flow(kind: str, row: str, n: int) -> list[float]:
        runnable = kinds[kind][0 if row == "subflow" else 1]
        return [await timed(lambda: runnable.ainvoke({"count": 0})) for _ in range(n)]

    for kind, (default, _) in kinds.items():  # warm-up
        for _ in range(2):
            await default.ainvoke({"count": 0})
        await user_flow(kind, "subflow", 2)
        await user_flow(kind, "inline", 2)
    def busy_retries() -> int:
        transport = shared_transport()
        return transport.retried if transport is not None else 0

    for kind, (default, _) in kinds.items():
        for row in COMPOSE_ROWS:
            before, before_prefect = busy_retries(), prefect_retries.count(503)
            if row == "top":
                call = functools.partial(default.ainvoke, {"count": 0})
                samples[kind][row] = [await timed(call) for _ in range(calls)]
            else:
                samples[kind][row] = await user_flow(kind, row, calls)
            absorbed[kind][row] = (
                f"{busy_retries() - before} / {prefect_retries.count(503) - before_prefect}"
            )
    return samples, absorbed


def report_compose(
    samples: dict[str, dict[str, list[float]]], absorbed: dict[str, dict[str, str]], calls: int, server: str,
    gap: float,
) -> None:
    print(f"\nComposing inside a flow ({server} API): {calls} calls each, {gap} s idle before each "
          "(not timed), median (worst) ms per call, ratio to top level\n")
    print("503s: absorbed by the shared client (10-500 ms) / retried by Prefect's client (2 s)\n")
    print("| row | chain, 3 steps | ratio | 503s | graph, 3 nodes | ratio | 503s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row, title in COMPOSE_ROWS.items():
        cells = []
        for kind in ("chain", "graph"):
            median = statistics.median(samples[kind][row])
            top = statistics.median(samples[kind]["top"])
            cells.append(f"{median * 1e3:.0f} ({max(samples[kind][row]) * 1e3:.0f}) | {median / top:.2f}x | "
                         f"{absorbed[kind][row]}")
        print(f"| {title} | {' | '.join(cells)} |")


async def compose_main(calls: int, server: str, gap: float) -> None:
    from prefect_beluga.orchestration._api_clients import shared_transport
    from prefect_beluga.testing.prefect_retries import PrefectClientRetries

    with PrefectClientRetries() as retries:
        samples, absorbed = await measure_compose(calls, retries, gap)
    report_compose(samples, absorbed, calls, server, gap)
    transport = shared_transport()
    absorbed = transport.retried if transport is not None else "n/a"
    print(f"\n503s absorbed by the shared client's fast retry (10-500 ms): {absorbed}; "
          f"retries by Prefect's own client (2 s and up): {retries.count(503)} of a 503, "
          f"{retries.count()} in all")


async def measure_durable(calls: int, gap: float) -> dict[str, list[float]]:
    """Milliseconds per call of each row, in one flow run, rows interleaved."""
    rows = {}
    for subflow in (True, False):
        rows[("on", subflow)] = Chain([add_one] * SMALL, name="bench-durable", subflow=subflow)
        rows[("off", subflow)] = Chain([add_one] * SMALL, name="bench-not-durable", subflow=subflow, durable=False)
    samples: dict[Any, list[float]] = {key: [] for key in rows}

    @flow(name="bench-durable-host", persist_result=False)
    async def host() -> None:
        for round_ in range(3 + calls):
            for key, chain in rows.items():
                await asyncio.sleep(gap)
                start = time.perf_counter()
                await chain.ainvoke({"count": 0})
                if round_ >= 3:
                    samples[key].append((time.perf_counter() - start) * 1e3)

    await host()
    return samples


def report_durable(samples: dict[Any, list[float]], calls: int, gap: float) -> None:
    print(f"\nDurability, a {SMALL}-step trivial chain in one user flow run: {calls} calls per row, {gap} s idle "
          "before each (not timed)\n")
    print("| 3-step trivial chain inside a user's `@flow` | durable, median (min) ms | "
          "`durable=False`, median (min) ms "
          "| ratio |")
    print("| --- | ---: | ---: | ---: |")
    for subflow, title in ((True, "as a subflow (default)"), (False, "`subflow=False`")):
        on, off = samples[("on", subflow)], samples[("off", subflow)]
        print(f"| {title} | {statistics.median(on):.1f} ({min(on):.1f}) | {statistics.median(off):.1f} "
              f"({min(off):.1f}) | {statistics.median(on) / statistics.median(off):.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40, help="interleaved rounds (default 40)")
    parser.add_argument(
        "--gap", type=float, default=0.5, help="idle seconds between runs, not timed (default 0.5)"
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile both sides")
    parser.add_argument("--compose", action="store_true",
                        help="measure calls inside a user's flow against top-level calls")
    parser.add_argument("--calls", type=int, default=10, help="calls per row with --compose or --durable")
    parser.add_argument("--durable", action="store_true",
                        help="measure a 3-step chain in a user's flow, durable and durable=False")
    parser.add_argument("--server", choices=("embedded", "sqlite", "postgresql"), default="embedded",
                        help="with --compose: the embedded API or a `prefect server` on that database")
    args = parser.parse_args()
    if args.durable:
        report_durable(asyncio.run(measure_durable(args.calls, args.gap)), args.calls, args.gap)
        return
    if args.compose:
        if args.server != "embedded":
            from prefect_beluga.testing.prefect_server import PrefectServer

            with PrefectServer(database=args.server) as server, server.settings():
                asyncio.run(compose_main(args.calls, args.server, args.gap))
        else:
            asyncio.run(compose_main(args.calls, args.server, args.gap))
        return
    samples = asyncio.run(measure(args.repeat, args.gap))
    report(samples, args.repeat, args.gap)
    if args.profile:
        asyncio.run(profile(20, args.gap))


if __name__ == "__main__":
    main()
