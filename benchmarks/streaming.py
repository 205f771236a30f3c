"""Token streaming: what a chain adds over the raw `openai` SDK, and the cross-process lag.

Against one loopback OpenAI server (`prefect_beluga.testing.OpenAIServer`, `--chunk-delay`
seconds between the chunks it writes, which it timestamps), in one process on Prefect's
embedded API (a temporary PREFECT_HOME of its own), interleaved, after a warm-up:

- raw: `AsyncOpenAI(...).chat.completions.create(stream=True)`, iterated;
- chain: `Chain([step]).astream(input, tokens=True)` where the step awaits `llm.agenerate`;

first at top level, then both again inside a user's `@flow` with the chain's `subflow=False`
(its step is a task run of the user's flow run: no flow run is created per call).

For each it prints, over `--repeat` calls: time to first token from the call (the chain's
includes creating its flow run and task run), first-token lag (the server writing the first
chunk -> the caller receiving it) and per-chunk lag (every chunk), medians and p95.

`--cross` then measures the workflow path on a real `prefect server` (SQLite,
`prefect_beluga.testing.PrefectServer`): a writer subprocess runs
`workflow.execute(input, stream=True)`; this process reads `workflow.astream(run_id)`. Lag per
event: the server writing the last chunk an event carries -> this process receiving the event
(coalescing adds up to 0.1 s by design). p50 / p95 over `--cross-runs` runs.

    python benchmarks/streaming.py [--repeat 20] [--words 20] [--chunk-delay 0.02] [--cross]
"""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: a private home (a shared SQLite database locks), no analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

KEY = "sk-bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms   p95 {pct(values, 0.95) * 1000:7.1f} ms"


async def raw_call(server: Any, client: Any, prompt: str) -> tuple[float, list[float]]:
    server.reset()
    started = time.perf_counter()
    received: list[float] = []
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            received.append(time.perf_counter())
    return received[0] - started, [got - sent for got, (sent, _) in zip(received, server.chunks, strict=True)]


async def chain_call(server: Any, chain: Any, prompt: str) -> tuple[float, list[float]]:
    server.reset()
    started = time.perf_counter()
    received = [time.perf_counter() async for event in chain.astream({"input": prompt}, tokens=True)
                if "__token__" in event]
    return received[0] - started, [got - sent for got, (sent, _) in zip(received, server.chunks, strict=True)]


async def in_process(args: argparse.Namespace) -> None:
    from openai import AsyncOpenAI
    from prefect import flow

    from prefect_beluga import Chain, Runnable
    from prefect_beluga.llms import Config
    from prefect_beluga.llms.openai import OpenAIChatModel
    from prefect_beluga.testing import OpenAIServer

    class Answer(Runnable):
        name = "answer"

        def __init__(self, llm: Any) -> None:
            self.llm = llm

        async def ainvoke(self, input: Any, config: Any = None) -> dict[str, Any]:
            return {"output": (await self.llm.agenerate(input["input"])).content}

    prompt = " ".join(f"w{i}" for i in range(args.words - 1))
    with OpenAIServer(api_key=KEY, chunk_delay=args.chunk_delay) as server:
        client = AsyncOpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
        chain = Chain([Answer(OpenAIChatModel(Config(api_key=KEY, base_url=server.base_url)))], name="bench")
        inline = Chain([Answer(OpenAIChatModel(Config(api_key=KEY, base_url=server.base_url)))], name="bench",
                       subflow=False)

        async def interleaved(chain: Any) -> dict[str, list[tuple[float, list[float]]]]:
            await raw_call(server, client, prompt)  # warm-up
            await chain_call(server, chain, prompt)
            results: dict[str, list[tuple[float, list[float]]]] = {"raw": [], "chain": []}
            for i in range(args.repeat):
                order = ("raw", "chain") if i % 2 == 0 else ("chain", "raw")
                for kind in order:
                    call = raw_call(server, client, prompt) if kind == "raw" else chain_call(server, chain, prompt)
                    results[kind].append(await call)
            return results

        @flow(name="bench-user-flow")
        async def user_flow() -> dict[str, list[tuple[float, list[float]]]]:
            return await interleaved(inline)

        report(args, "in process, top level", await interleaved(chain))
        report(args, "in process, inside a user's flow (subflow=False: no flow run to create)", await user_flow())


def report(args: argparse.Namespace, title: str, results: dict[str, list[tuple[float, list[float]]]]) -> None:
    print(f"{title}: {args.repeat} calls each, {args.words} chunks, {args.chunk_delay * 1000:.0f} ms apart")
    for kind, runs in results.items():
        print(f"  {kind:5} time to first token from the call: {ms([t for t, _ in runs])}")
        print(f"  {kind:5} first-token lag (server write -> caller): {ms([lags[0] for _, lags in runs])}")
        print(f"  {kind:5} per-chunk lag (all chunks):           {ms([x for _, lags in runs for x in lags])}")
    pairs = list(zip(results["chain"], results["raw"], strict=True))
    first = [c[0] - r[0] for c, r in pairs]
    lag = [c[1][0] - r[1][0] for c, r in pairs]
    print(f"  time to first token, chain - raw (paired): median {statistics.median(first) * 1000:.1f} ms")
    print(f"  first-token lag, chain - raw (paired): median {statistics.median(lag) * 1000:.1f} ms")


WRITER = """
import sys
from prefect_beluga import Chain, Orchestrator, Runnable
from prefect_beluga.llms import Config
from prefect_beluga.llms.openai import OpenAIChatModel

class Answer(Runnable):
    name = "answer"
    def __init__(self, llm):
        self.llm = llm
    def invoke(self, input, config=None):
        return {"answer": self.llm.generate(input["input"]).content}

llm = OpenAIChatModel(Config(api_key=sys.argv[2], base_url=sys.argv[1]))
workflow = Orchestrator().create_workflow(Chain([Answer(llm)], name="bench"), workflow_id="bench-stream")
for _ in range(int(sys.argv[4])):
    workflow_id, run_id = workflow.execute({"input": sys.argv[3]}, stream=True)
    print(run_id, flush=True)
    workflow.get_result(workflow_id, run_id, timeout=300)
    sys.stdin.readline()  # the reader is done with this run
"""


async def cross_process(args: argparse.Namespace) -> None:
    from prefect_beluga import Orchestrator
    from prefect_beluga.testing import OpenAIServer, PrefectServer

    prompt = " ".join(f"w{i}" for i in range(args.words - 1))
    lags: list[float] = []
    with PrefectServer() as prefect, OpenAIServer(api_key=KEY, chunk_delay=args.chunk_delay) as server:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, server.base_url, KEY, prompt, str(args.cross_runs + 1)],
            env=prefect.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        with prefect.settings():
            reader = Orchestrator().create_workflow(lambda state: state, workflow_id="bench-stream")
            for run in range(args.cross_runs + 1):  # the first is a warm-up
                server.reset()
                run_id = writer.stdout.readline().strip()
                received: list[tuple[float, str]] = []
                async for event in reader.astream(run_id):
                    if "__token__" in event:
                        received.append((time.perf_counter(), event["__token__"]["text"]))
                writer.stdin.write("\n")
                writer.stdin.flush()
                if run == 0:
                    continue
                chunks, seen = server.chunks, 0
                ends = []  # index of the last chunk in each event
                for _, text in received:
                    seen += len(text)
                    total = 0
                    for index, (_, piece) in enumerate(chunks):
                        total += len(piece)
                        if total >= seen:
                            ends.append(index)
                            break
                lags.extend(got - chunks[end][0] for (got, _), end in zip(received, ends, strict=True))
        writer.wait(timeout=60)
    print(f"cross process (real server, SQLite): {args.cross_runs} runs, {len(lags)} events")
    print(f"  lag server write -> reader: p50 {pct(lags, 0.5) * 1000:.0f} ms   p95 {pct(lags, 0.95) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--chunk-delay", type=float, default=0.02)
    parser.add_argument("--cross", action="store_true")
    parser.add_argument("--cross-runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(in_process(args))
    if args.cross:
        asyncio.run(cross_process(args))


if __name__ == "__main__":
    main()
