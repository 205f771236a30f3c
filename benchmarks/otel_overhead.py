"""What the GenAI telemetry costs when no OpenTelemetry SDK is configured (the common case).

Times `ChatModel.agenerate` on the offline model (no network) with the telemetry hook as it
ships, against the same calls with the hook's entry point replaced by one that returns the
no-op object at once (the cost of the SDK check itself), and times the entry point alone.

    .venv/bin/python benchmarks/otel_overhead.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider

from prefect_beluga import llms
from prefect_beluga.core import _telemetry


def per_call(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    assert isinstance(trace.get_tracer_provider(), ProxyTracerProvider), "run without an SDK configured"
    llm = llms.Factory().create_provider("offline", llms.Config(provider="offline"))
    messages = "What is Prefect?"

    def enter_exit() -> None:
        with _telemetry.chat_call(llm, (), {}) as call:
            call.chat_result(None)

    hook = min(per_call(enter_exit, 200_000) for _ in range(5))

    loop = asyncio.new_event_loop()

    def generate_many(n: int) -> float:
        async def run() -> float:
            start = time.perf_counter()
            for _ in range(n):
                await llm.agenerate(messages)
            return (time.perf_counter() - start) / n
        return loop.run_until_complete(run())

    original = _telemetry.chat_call
    generate_many(2000)  # warm up
    with_hook, without_check = [], []
    for _ in range(7):  # alternating, so drift affects both alike
        with_hook.append(generate_many(2000))
        _telemetry.chat_call = lambda *a, **k: _telemetry._NOOP  # the hook without its SDK check
        try:
            without_check.append(generate_many(2000))
        finally:
            _telemetry.chat_call = original
    with_hook, without_check = statistics.median(with_hook), statistics.median(without_check)
    print(f"no-SDK hook (check + enter/exit + record): {hook * 1e9:.0f} ns per call")
    print(f"offline agenerate with the hook: {with_hook * 1e6:.1f} us; with a bare no-op: {without_check * 1e6:.1f} us")


if __name__ == "__main__":
    main()
