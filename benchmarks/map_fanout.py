"""Map fan-out: per-item cost against raw Prefect `task.map`, and how close a bounded Map gets
to its floor.

Runs in one process on Prefect's ephemeral API (a temporary PREFECT_HOME of its own), inside
one warm outer async `@flow` (each part in the same flow run):

1. 1,000 zero-latency items. Ours: a `Chain([Map(work, over="items")], subflow=False)`, so
   each item is a task run of the outer flow run (`work[0]` ... `work[999]`), durable as every
   step in a flow run is by default (each item's result persisted), and again with
   `durable=False`. Raw: the same
   function as `@task(cache_policy=NONE, persist_result=False)`, `work.map(items)` on the
   flow's default task runner, then the results gathered. Wall time / 1,000 per item, median of
   `--repeat` rounds (the three alternate, order rotating). Then peak Python memory (tracemalloc)
   of one more run of each.
2. 200 items each sleeping 50 ms at `max_concurrency=20`: the floor is ceil(200 / 20) x 50 ms
   = 500 ms; efficiency = floor / wall (median of `--repeat`). The reference row is raw
   Prefect: the same sleep as an async `@task(cache_policy=NONE, persist_result=False)`, 200
   calls gated by an `asyncio.Semaphore(20)`: one task run per item and the same bound, without
   Map. Map (durable and `durable=False`) and raw alternate (order rotating). Before each
   timed run the garbage collector runs (not timed, as `timeit` keeps it out of the timing):
   otherwise a full collection of the process's heap (~130 ms here) lands in one run of about
   four, whichever side it is.
   Process CPU time per run is printed too: the run is CPU-bound when it nears the wall time.

`--server sqlite|postgresql` runs it all against a `prefect server` in a process of its own.

    python benchmarks/map_fanout.py [--repeat 3] [--items 1000] [--part all|1|2]
                                    [--server embedded|sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import statistics
import tempfile
import time
import tracemalloc

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NONE  # noqa: E402

from prefect_beluga import Chain, Map  # noqa: E402


async def work(state: dict) -> dict:
    return {"y": state["item"] * 2}


@task(name="raw-work", cache_policy=NONE, persist_result=False)
async def raw_work(item: int) -> dict:
    return {"y": item * 2}


async def sleepy(state: dict) -> dict:
    await asyncio.sleep(0.05)
    return {"y": state["item"]}


@task(name="raw-sleepy", cache_policy=NONE, persist_result=False)
async def raw_sleepy(item: int) -> dict:
    await asyncio.sleep(0.05)
    return {"y": item}


async def run_ours(n: int, durable: bool = True) -> float:
    chain = Chain([Map(work, over="items", name="work")], name="map-bench", subflow=False, durable=durable)
    start = time.perf_counter()
    result = await chain.ainvoke({"items": list(range(n))})
    wall = time.perf_counter() - start
    assert [r["y"] for r in result["work"]] == [2 * i for i in range(n)]
    return wall


async def run_raw(n: int) -> float:
    start = time.perf_counter()
    futures = raw_work.map(list(range(n)))
    results = await asyncio.to_thread(futures.result)
    wall = time.perf_counter() - start
    assert [r["y"] for r in results] == [2 * i for i in range(n)]
    return wall


async def run_bounded(n: int, limit: int, durable: bool = True) -> float:
    chain = Chain([Map(sleepy, over="items", name="sleepy", max_concurrency=limit)],
                  name="map-bounded", subflow=False, durable=durable)
    start = time.perf_counter()
    result = await chain.ainvoke({"items": list(range(n))})
    wall = time.perf_counter() - start
    assert len(result["sleepy"]) == n
    return wall


async def run_bounded_raw(n: int, limit: int) -> float:
    gate = asyncio.Semaphore(limit)

    async def one(item: int) -> dict:
        async with gate:
            return await raw_sleepy(item)

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    assert len(results) == n
    return wall


def not_durable(run):
    """`run` with the chain's `durable=False`: no result record persisted per item."""
    return lambda *args: run(*args, durable=False)


async def peak_memory(run, n: int) -> float:
    tracemalloc.start()
    try:
        await run(n)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@flow(name="map-fanout-bench", persist_result=False)
async def bench(repeat: int, items: int, parts: str) -> None:
    if parts in ("all", "1"):
        await per_item_cost(repeat, items)
    if parts in ("all", "2"):
        await bounded_efficiency(repeat)


async def per_item_cost(repeat: int, items: int) -> None:
    await run_ours(50)
    await run_ours(50, durable=False)
    await run_raw(50)  # warm every path
    ours: list[float] = []
    ours_not_durable: list[float] = []
    raw: list[float] = []
    for round_ in range(repeat):
        order = [(run_ours, ours), (not_durable(run_ours), ours_not_durable), (run_raw, raw)]
        for run, times in order[round_ % 3:] + order[:round_ % 3]:
            times.append(await run(items))
            await asyncio.sleep(1.0)  # let the API write the task runs' events
    per_raw = statistics.median(raw) / items * 1e3
    print(f"1. {items} zero-latency items, {repeat} rounds (ms per item: median [min, max])")
    for label, times in (("Map", ours), ("Map, durable=False", ours_not_durable), ("task.map", raw)):
        print(f"   {label + ':':20} {statistics.median(times) / items * 1e3:.2f} ms  "
              f"[{min(times) / items * 1e3:.2f}, {max(times) / items * 1e3:.2f}]")
    for label, times in (("Map", ours), ("Map, durable=False", ours_not_durable)):
        print(f"   ratio {label} / task.map: {statistics.median(times) / items * 1e3 / per_raw:.2f}x (goal <= 1.1x)")
    mem_ours = await peak_memory(run_ours, items)
    await asyncio.sleep(1.0)
    mem_raw = await peak_memory(run_raw, items)
    print(f"   peak Python memory (tracemalloc) of one run: Map {mem_ours:.1f} MiB, task.map {mem_raw:.1f} MiB")


async def bounded_efficiency(repeat: int) -> None:
    n, limit, latency = 200, 20, 0.05
    floor = math.ceil(n / limit) * latency
    await run_bounded(limit, limit)
    await run_bounded(limit, limit, durable=False)
    await run_bounded_raw(limit, limit)  # warm every path
    order = [("Map", run_bounded), ("Map, durable=False", not_durable(run_bounded)), ("raw Prefect", run_bounded_raw)]
    walls: dict[str, list[float]] = {label: [] for label, _ in order}
    cpus: dict[str, list[float]] = {label: [] for label, _ in order}
    for round_ in range(repeat):
        for label, run in order[round_ % 3:] + order[:round_ % 3]:
            await asyncio.sleep(1.0)
            gc.collect()
            cpu = time.process_time()
            walls[label].append(await run(n, limit))
            cpus[label].append(time.process_time() - cpu)
    print(f"2. {n} items x {latency * 1e3:.0f} ms, max_concurrency={limit}, {repeat} rounds: "
          f"floor {floor * 1e3:.0f} ms (goal: Map efficiency >= 85 %)")
    for label, times in walls.items():
        wall = statistics.median(times)
        cpu = statistics.median(cpus[label])
        print(f"   {label + ':':20} wall {wall * 1e3:.0f} ms [{min(times) * 1e3:.0f}, {max(times) * 1e3:.0f}], "
              f"efficiency {floor / wall:.0%}, process CPU {cpu * 1e3:.0f} ms ({cpu / n * 1e3:.2f} ms per item)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--part", choices=["all", "1", "2"], default="all",
                        help="run part 1, part 2 or both (part 2 alone: on an API not still "
                             "recording part 1's thousands of task runs)")
    parser.add_argument("--server", choices=("embedded", "sqlite", "postgresql"), default="embedded",
                        help="the embedded API (in this process) or a `prefect server` on that "
                             "database, in a process of its own")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}, API: {args.server}")
    if args.server == "embedded":
        asyncio.run(bench(args.repeat, args.items, args.part))
        return
    from prefect_beluga.testing.prefect_server import PrefectServer

    with PrefectServer(database=args.server) as server, server.settings():
        asyncio.run(bench(args.repeat, args.items, args.part))


if __name__ == "__main__":
    main()
