"""The front door's streaming, measured: first token through the app vs `workflow.stream` in
process vs the raw SDK, and many concurrent SSE clients on one app process.

One real `prefect server` (SQLite, `prefect_beluga.testing.PrefectServer`), one loopback OpenAI
server in this process (`--chunk-delay` seconds between the chunks it writes, each timestamped
with this process's clock), and one app process (`python -m prefect_beluga.server`, through
`prefect_beluga.testing.app_server.AppServer`) serving `benchmarks/_app_workflow.py`. Interleaved,
after a warm-up, `--repeat` times each:

- raw: `AsyncOpenAI(...).chat.completions.create(stream=True)`: call -> first text chunk;
- in process: `workflow.aexecute(input, stream=True)` then `workflow.astream(run_id)` in one
  process (a child on the server's API: the run in its background runner, its events through
  the Prefect API back to it): call -> first `__token__`;
- app: `POST /runs`, then `GET /runs/{id}/events` (SSE, AG-UI): POST -> first
  `TEXT_MESSAGE_CONTENT` (the run in the app process, the events through the API to the app).

Then `--clients` SSE clients (httpx, one event loop here) open one run's stream at once, before
its tokens start, and read it to `RUN_FINISHED`. Events lost: per client, the events of a full
replay of the run read afterwards that it did not get (by id), and whether its text equals the
model's answer. Lag per event: the server writing the last chunk a `TEXT_MESSAGE_CONTENT`
carries -> the client receiving it (coalescing adds up to 0.1 s by design), p50 / p95 over
every client's events.

    python benchmarks/app_streaming.py [--repeat 5] [--words 40] [--chunk-delay 0.02] [--clients 50]
"""

from __future__ import annotations

import os
import tempfile

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
KEY = "sk-bench-app"
TOKEN = "bench-app-token-0123456789"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms   p95 {pct(values, 0.95) * 1000:7.1f} ms"


async def raw_first(client: Any, prompt: str) -> float:
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True)
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    assert first is not None
    return first


IN_PROCESS = """
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from _app_workflow import answer

async def once(prompt):
    started = time.perf_counter()
    _, run_id = await answer.aexecute({"input": prompt}, stream=True)
    first = None
    async for event in answer.astream(run_id):
        if first is None and "__token__" in event:
            first = time.perf_counter() - started
    assert first is not None, "no token event"
    return first

async def main():
    for line in sys.stdin:
        print(json.dumps(await once(line.strip())), flush=True)

asyncio.run(main())
"""


class InProcess:
    """`workflow.aexecute(..., stream=True)` + `workflow.astream(run_id)` in one process of its
    own on the server's API (its Prefect settings are its environment's, so the background
    runner's threads use them too); one run per line written to it, its first-token time back."""

    def __init__(self, env: dict[str, str]) -> None:
        import subprocess

        self.child = subprocess.Popen([sys.executable, "-c", IN_PROCESS, str(HERE)], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def first(self, prompt: str) -> float:
        def ask() -> float:
            assert self.child.stdin is not None and self.child.stdout is not None
            self.child.stdin.write(prompt + "\n")
            self.child.stdin.flush()
            line = self.child.stdout.readline()
            assert line, "the in-process runner ended"
            return float(line)

        return await asyncio.to_thread(ask)

    def close(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait(60)


async def sse(http: Any, url: str, headers: dict[str, str], on_event: Any = None) -> list[tuple[str, dict]]:
    """Read one SSE stream to its end: (id, AG-UI event) per message."""
    events: list[tuple[str, dict]] = []
    async with http.stream("GET", url, headers=headers, timeout=300) as reply:
        assert reply.status_code == 200, await reply.aread()
        current, data = None, []
        async for line in reply.aiter_lines():
            if line.startswith("id: "):
                current = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                event = json.loads("\n".join(data))
                events.append((current, event))
                if on_event is not None:
                    on_event(event)
                current, data = None, []
    return events


async def app_first(http: Any, app: Any, prompt: str) -> float:
    started = time.perf_counter()
    reply = await http.post(f"{app.url}/runs", json={"workflow_id": "bench-answer", "input": {"input": prompt}},
                            headers=app.headers)
    assert reply.status_code == 201, reply.text
    first: list[float] = []

    def on_event(event: dict) -> None:
        if event["type"] == "TEXT_MESSAGE_CONTENT" and not first:
            first.append(time.perf_counter() - started)

    events = await sse(http, f"{app.url}/runs/{reply.json()['run_id']}/events", app.headers, on_event)
    assert events[-1][1]["type"] == "RUN_FINISHED", events[-1]
    return first[0]


async def fan_out(http: Any, app: Any, server: Any, prompt: str, clients: int) -> None:
    server.reset()
    # the run waits for its model until every client is connected: the first chunk is written
    # only after the model call started, which is after the POST; the clients connect first
    reply = await http.post(f"{app.url}/runs", json={"workflow_id": "bench-answer", "input": {"input": prompt}},
                            headers=app.headers)
    run_id = reply.json()["run_id"]
    url = f"{app.url}/runs/{run_id}/events"
    received: list[list[tuple[float, dict]]] = [[] for _ in range(clients)]

    def recorder(i: int) -> Any:
        return lambda event: received[i].append((time.perf_counter(), event))

    streams = await asyncio.gather(*(sse(http, url, app.headers, recorder(i)) for i in range(clients)))
    replay = await sse(http, url, app.headers)
    answer = "".join(text for _, text in server.chunks)
    all_ids = [event_id for event_id, _ in replay]
    lost = [len(set(all_ids) - {event_id for event_id, _ in stream}) for stream in streams]
    texts_ok = sum("".join(e["delta"] for _, e in stream if e["type"] == "TEXT_MESSAGE_CONTENT") == answer
                   for stream in streams)
    duplicates = sum(len(stream) - len({event_id for event_id, _ in stream}) for stream in streams)
    chunks = server.chunks
    lags: list[float] = []
    for events in received:
        seen = 0
        for got, event in events:
            if event["type"] != "TEXT_MESSAGE_CONTENT":
                continue
            seen += len(event["delta"])
            total = 0
            for written, piece in chunks:
                total += len(piece)
                if total >= seen:
                    lags.append(got - written)
                    break
    print(f"{clients} concurrent SSE clients on one app process, one run of {len(chunks)} chunks, "
          f"{len(replay)} events each:")
    print(f"  events lost: {sum(lost)} (per client max {max(lost)}); duplicates: {duplicates}; "
          f"clients whose text equals the answer: {texts_ok}/{clients}")
    print(f"  lag server write -> client, per text event ({len(lags)} events): "
          f"p50 {pct(lags, 0.5) * 1000:.0f} ms   p95 {pct(lags, 0.95) * 1000:.0f} ms   max {max(lags) * 1000:.0f} ms")


async def main_async(args: argparse.Namespace) -> None:
    import httpx
    from openai import AsyncOpenAI

    from prefect_beluga.testing import OpenAIServer, PrefectServer
    from prefect_beluga.testing.app_server import AppServer

    prompt = " ".join(f"w{i}" for i in range(args.words - 1))
    with PrefectServer(startup_timeout=240) as prefect, \
            OpenAIServer(api_key=KEY, chunk_delay=args.chunk_delay) as server:
        os.environ.update(BELUGA_BENCH_OPENAI_URL=server.base_url, BELUGA_BENCH_OPENAI_KEY=KEY)
        env = dict(prefect.env, BELUGA_BENCH_OPENAI_URL=server.base_url, BELUGA_BENCH_OPENAI_KEY=KEY)
        with AppServer(["_app_workflow:answer"], env=env, token=TOKEN, pythonpath=[str(HERE)]) as app:
            in_process = InProcess(env)
            client = AsyncOpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
            limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=args.clients + 10)
            async with httpx.AsyncClient(limits=limits) as http:
                await raw_first(client, prompt)  # warm-up of each path
                await in_process.first(prompt)
                await app_first(http, app, prompt)
                results: dict[str, list[float]] = {"raw SDK": [], "workflow.stream, in process": [], "app (SSE)": []}
                for i in range(args.repeat):
                    calls = [("raw SDK", raw_first(client, prompt)),
                             ("workflow.stream, in process", in_process.first(prompt)),
                             ("app (SSE)", app_first(http, app, prompt))]
                    for name, call in calls if i % 2 == 0 else reversed(calls):
                        results[name].append(await call)
                print(f"time to first token, from the call ({args.repeat} each, interleaved; "
                      f"{args.words} words, {args.chunk_delay * 1000:.0f} ms between chunks):")
                for name, values in results.items():
                    print(f"  {name:30s} {ms(values)}")
                long_prompt = " ".join(f"w{i}" for i in range(args.fan_words - 1))
                await fan_out(http, app, server, long_prompt, args.clients)
            in_process.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--fan-words", type=int, default=150)
    parser.add_argument("--chunk-delay", type=float, default=0.02)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
