"""What usage limits cost per model request: unset (the default), and set.

Every chat-model request asks `prefect_beluga.usage.before_request` first. With no limits in
the run that is one context-variable lookup; with limits it estimates the prompt's tokens with
tiktoken, takes a lock to reserve them, and settles the reply's usage after. Measured in one
process, no Prefect API, on two models:

- fixed:   a chat model whose `_agenerate` returns a prepared reply (nothing but our own code:
           the worst case for a relative overhead);
- offline: the package's `OfflineChatModel` (its reply is real work: tiktoken counts, sentence
           scoring), the cheapest real model there is.

Sides, per model: `bypass` calls the request path without the budget hook (what a request did
before usage limits existed), `unset` is an ordinary `agenerate` with no limits (the default),
`set` runs inside a budget with every limit set (high enough never to refuse). They alternate,
in rotating order, after a warm-up. Printed: microseconds per request (median of `--repeat`
rounds of `--calls` requests) and the ratios side by side.

With `--chain`, also whole runs: `Chain([offline model, offline model])` inside one long-lived
flow run (Prefect's ephemeral API, a temporary PREFECT_HOME), without `usage_limits` and with
them; inline (`subflow=False`), and as a subflow, whose run gets the usage artifact when set.

    python benchmarks/usage_overhead.py [--repeat 15] [--calls 2000] [--chain]
"""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: a private home (a shared SQLite database locks), no analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import argparse
import asyncio
import platform
import statistics
import time
from typing import Any

from prefect import flow

from prefect_beluga import Chain, UsageLimits, usage
from prefect_beluga.llms import Config
from prefect_beluga.llms.base import ChatModel
from prefect_beluga.llms.offline import OfflineChatModel
from prefect_beluga.schema import AIMessage, ChatResult, HumanMessage, SystemMessage, Usage

MESSAGES = [
    SystemMessage("Context: Prefect schedules and observes flows. Pinecone stores vectors for search."),
    HumanMessage("What does Pinecone store?"),
]
LIMITS = UsageLimits(requests=10**9, input_tokens=10**12, output_tokens=10**12, total_tokens=10**12, cost_usd=10**6)


class FixedChatModel(ChatModel):
    """Replies with one prepared result: only the request path around it is measured."""

    def __init__(self) -> None:
        self.config = Config(provider="openai", model_name="gpt-4o-mini")
        self.reply = ChatResult(message=AIMessage("Vectors."), usage=Usage(prompt_tokens=30, completion_tokens=2,
                                                                         total_tokens=32), model="gpt-4o-mini")

    async def _agenerate(self, messages: Any, **request: Any) -> ChatResult:
        return self.reply


async def per_call(llm: ChatModel, side: str, calls: int) -> float:
    """Microseconds per request of `side`."""
    checked = list(MESSAGES)
    if side == "bypass":
        started = time.perf_counter()
        for _ in range(calls):
            await llm._send(checked, None, {})
        return (time.perf_counter() - started) / calls * 1e6
    if side == "unset":
        started = time.perf_counter()
        for _ in range(calls):
            await llm._generate_checked(checked, None)
        return (time.perf_counter() - started) / calls * 1e6
    with usage.scope(LIMITS, name="bench"):
        started = time.perf_counter()
        for _ in range(calls):
            await llm._generate_checked(checked, None)
        return (time.perf_counter() - started) / calls * 1e6


async def main(args: argparse.Namespace) -> None:
    sides = ["bypass", "unset", "set"]
    print(f"python {platform.python_version()}, {args.repeat} rounds of {args.calls} requests per side")
    print(f"{'model':8} {'bypass µs':>10} {'unset µs':>10} {'set µs':>10} {'unset/bypass':>13} {'set/bypass':>11}")
    for label, llm in (("fixed", FixedChatModel()), ("offline", OfflineChatModel())):
        times: dict[str, list[float]] = {side: [] for side in sides}
        for side in sides:  # warm-up: encodings loaded, caches filled
            await per_call(llm, side, max(args.calls // 10, 10))
        for i in range(args.repeat):
            for side in sides[i % 3:] + sides[: i % 3]:
                times[side].append(await per_call(llm, side, args.calls))
        median = {side: statistics.median(values) for side, values in times.items()}
        print(f"{label:8} {median['bypass']:10.2f} {median['unset']:10.2f} {median['set']:10.2f} "
              f"{median['unset'] / median['bypass']:13.3f} {median['set'] / median['bypass']:11.3f}")
    if args.chain:
        await chain_runs(args)


async def chain_runs(args: argparse.Namespace) -> None:
    for subflow in (False, True):
        await chain_runs_of(args, subflow)


async def chain_runs_of(args: argparse.Namespace, subflow: bool) -> None:
    llm = OfflineChatModel()
    chains = {
        "unset": Chain([llm, llm], name="bench-usage", subflow=subflow),
        "set": Chain([llm, llm], name="bench-usage", subflow=subflow, usage_limits=LIMITS),
    }
    times: dict[str, list[float]] = {side: [] for side in chains}
    state = {"input": "What does Pinecone store?", "system": MESSAGES[0].content}

    @flow(name="bench-usage-host", persist_result=False)
    async def host() -> None:
        sides = list(chains)
        for side in sides * 3:  # warm-up
            await chains[side].ainvoke(state)
        for i in range(args.repeat * 2):
            for side in sides[i % 2:] + sides[: i % 2]:
                started = time.perf_counter()
                await chains[side].ainvoke(state)
                times[side].append((time.perf_counter() - started) * 1e3)

    await host()
    median = {side: statistics.median(values) for side, values in times.items()}
    fastest = {side: min(values) for side, values in times.items()}
    how = "as a subflow (+ usage artifact when set)" if subflow else "inline (subflow=False)"
    print(f"chain of 2 offline-model steps in a flow run, {how}, {args.repeat * 2} runs per side: "
          f"unset {median['unset']:.1f} ms ({fastest['unset']:.1f}), set {median['set']:.1f} ms "
          f"({fastest['set']:.1f}), set/unset {median['set'] / median['unset']:.2f}x median (min)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--chain", action="store_true", help="also time whole chain runs (Prefect API)")
    asyncio.run(main(parser.parse_args()))
