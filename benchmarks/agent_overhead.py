"""What an Agent costs per model turn on top of the same loop written by hand with the SDK.

Runs, in one process on Prefect's ephemeral API (a temporary PREFECT_HOME of its own), against
one loopback OpenAI server answering every request after `--latency` seconds:

- sdk:     a hand-written loop: `AsyncOpenAI.chat.completions.create(tools=...)`, run the tool
           calls of the turn with `asyncio.gather`, append the results, again until an answer;
- agent:   `Agent(llm, tools=[lookup]).ainvoke(...)` inside one long-lived flow run: each model
           call and each tool call is a Prefect task run;
- agent-nodur: the same agent with `durable=False` (inside a flow run the agent is durable by
           default: every model turn and tool call persists its result, docs/durability.md);
- agent+flow: `Agent.ainvoke` on its own, which also starts one flow run per conversation;
- pydantic-ai: Pydantic AI's Prefect durability (`pydantic_ai.Agent(..., capabilities=
           [PrefectDurability()])`, extra `bench`) in the same flow run, the same tool, server
           and scripted conversation: each model request and tool call is a Prefect task whose
           result is persisted under a key of its inputs, the task source and the flow run id.

Every conversation asks a question of its own (a counter in it), so no side can serve one
conversation from another's records in the shared flow run.

Every conversation has `--turns` tool-calling turns (each asking for `--tools` calls of a
trivial tool, run concurrently) and one final answer: `--turns + 1` model calls. The sides
alternate, in rotating order, after a warm-up, so drift lands on all alike. Printed: the median
seconds per conversation of each side, and the overhead per model turn,
(side - sdk) / (turns + 1), which includes that turn's tool-call task runs — from the medians,
and from the fastest runs (less sensitive to a busy machine).

    python benchmarks/agent_overhead.py [--repeat 15] [--latency 0.05] [--turns 3] [--tools 2]
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
import json
import platform
import statistics
import time
from typing import Any

from openai import AsyncOpenAI
from prefect import flow

from prefect_beluga import llms
from prefect_beluga.agents import Agent
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.tools import tool

try:
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.durable_exec.prefect import PrefectDurability
    from pydantic_ai.models.openai import OpenAIChatModel as PydanticOpenAIModel
    from pydantic_ai.providers.openai import OpenAIProvider
except ImportError:  # pip install -e '.[bench]'
    PydanticAgent = None

KEY = "sk-bench"


@tool
async def lookup(key: str) -> str:
    """Look a key up (trivial: what is measured is the loop around it)."""
    return key.upper()


def responder(turns: int, tools: int):
    """The server's replies: `turns` turns of `tools` tool calls, then an answer."""

    def reply(messages: list[dict[str, Any]]) -> Any:
        done = sum(1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls"))
        if done < turns:
            return {"tool_calls": [{"name": "lookup", "arguments": {"key": f"k{done}-{i}"}} for i in range(tools)]}
        return "All keys looked up."

    return reply


async def sdk_loop(client: AsyncOpenAI, question: str) -> str:
    """The hand-written loop an agent replaces."""
    spec = lookup.to_openai()
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    while True:
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[spec])
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))

        async def run(call: Any) -> dict[str, Any]:
            arguments = json.loads(call.function.arguments)
            return {"role": "tool", "tool_call_id": call.id, "content": await lookup.fn(**arguments)}

        messages.extend(await asyncio.gather(*(run(c) for c in message.tool_calls)))


async def main(args: argparse.Namespace) -> None:
    with OpenAIServer(api_key=KEY, latency=args.latency, responder=responder(args.turns, args.tools)) as server:
        client = AsyncOpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
        llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key=KEY, base_url=server.base_url))
        agent = Agent(llm, tools=[lookup], name="bench-agent")
        plain_agent = Agent(llm, tools=[lookup], name="bench-agent", durable=False)
        times: dict[str, list[float]] = {"sdk": [], "agent": [], "agent-nodur": [], "agent+flow": []}
        if PydanticAgent is not None:
            model = PydanticOpenAIModel("gpt-4o-mini", provider=OpenAIProvider(base_url=server.base_url, api_key=KEY))
            pydantic_agent = PydanticAgent(model, tools=[lookup.fn], name="bench-pydantic-agent",
                                           capabilities=[PrefectDurability()])
            times["pydantic-ai"] = []
        asked = iter(range(10**9))

        @flow(name="bench-agent-host", persist_result=False)
        async def host() -> None:
            async def timed(side: str) -> None:
                question = f"Look up every key ({next(asked)})."
                started = time.perf_counter()
                if side == "sdk":
                    await sdk_loop(client, question)
                elif side == "agent":
                    await agent.ainvoke(question)
                elif side == "agent-nodur":
                    await plain_agent.ainvoke(question)
                elif side == "pydantic-ai":
                    await pydantic_agent.run(question)
                else:  # outside this flow run: the agent starts a flow run of its own
                    await asyncio.get_running_loop().run_in_executor(None, agent.invoke, question)
                times[side].append(time.perf_counter() - started)

            sides = list(times)
            for _ in range(2):  # warm-up: imports, clients, the first flow and task runs
                for side in sides:
                    await timed(side)
            for values in times.values():
                values.clear()
            for i in range(args.repeat):
                for side in sides[i % len(sides):] + sides[: i % len(sides)]:
                    await timed(side)
                    await asyncio.sleep(args.gap)

        await host()
        requests = len(server.requests_to("/v1/chat/completions"))

    calls = args.turns + 1
    sdk = statistics.median(times["sdk"])
    print(f"# agent overhead: {args.repeat} conversations per side, {args.turns} tool turns x {args.tools} "
          f"tool calls + 1 answer = {calls} model calls each; loopback latency {args.latency * 1000:.0f} ms")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{requests} chat requests served")
    print(f"{'side':<12}{'median s':>10}{'min s':>8}{'max s':>8}{'per turn ms':>13}"
          f"{'overhead/turn ms':>18}{'(by min) ms':>13}")
    fastest = min(times["sdk"])
    for side, values in times.items():
        median = statistics.median(values)
        print(f"{side:<12}{median:>10.3f}{min(values):>8.3f}{max(values):>8.3f}"
              f"{median / calls * 1000:>13.1f}{(median - sdk) / calls * 1000:>18.1f}"
              f"{(min(values) - fastest) / calls * 1000:>13.1f}")
    print(f"ratio agent/sdk {statistics.median(times['agent']) / sdk:.2f}, "
          f"agent-nodur/sdk {statistics.median(times['agent-nodur']) / sdk:.2f}, "
          f"agent+flow/sdk {statistics.median(times['agent+flow']) / sdk:.2f}"
          + (f", pydantic-ai/sdk {statistics.median(times['pydantic-ai']) / sdk:.2f}" if "pydantic-ai" in times
             else " (pydantic-ai not installed: pip install -e '.[bench]')"))
    expected = len(times) * (args.repeat + 2) * calls
    assert requests == expected, f"{requests} chat requests, expected {expected}: a side skipped model calls"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per model request")
    parser.add_argument("--turns", type=int, default=3, help="tool-calling turns per conversation")
    parser.add_argument("--tools", type=int, default=2, help="tool calls per turn")
    parser.add_argument("--gap", type=float, default=0.2, help="idle seconds between runs (not timed)")
    asyncio.run(main(parser.parse_args()))
