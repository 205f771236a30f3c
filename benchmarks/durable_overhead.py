"""What durability costs a 3-step trivial chain inside a user's flow run (docs/durability.md).

One warm async `@flow` on Prefect's ephemeral API; a 3-step chain of trivial async steps,
durable (the default) and `durable=False`, as a subflow and with `subflow=False`, interleaved,
0.3 s idle between calls (not timed), 3 warm-up rounds then 20 timed ones.

    python benchmarks/durable_overhead.py
"""

from __future__ import annotations

import os
import tempfile

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

import asyncio  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from prefect import flow  # noqa: E402

from prefect_beluga import Chain  # noqa: E402


async def inc(state: dict) -> dict:
    return {"count": state.get("count", 0) + 1}


def main() -> None:
    rows = {}
    for sub in (True, False):
        rows[f"durable subflow={sub}"] = Chain([inc, inc, inc], name="d", subflow=sub)
        rows[f"durable=False subflow={sub}"] = Chain([inc, inc, inc], name="n", subflow=sub, durable=False)
    times: dict[str, list[float]] = {k: [] for k in rows}

    @flow(persist_result=False)
    async def host() -> None:
        for round_ in range(23):
            for label, chain in rows.items():
                await asyncio.sleep(0.3)
                started = time.perf_counter()
                await chain.ainvoke({"count": 0})
                if round_ >= 3:
                    times[label].append((time.perf_counter() - started) * 1000)

    asyncio.run(host())
    for label, values in times.items():
        print(f"{label:<28} median {statistics.median(values):6.1f} ms  min {min(values):6.1f}")


if __name__ == "__main__":
    main()
