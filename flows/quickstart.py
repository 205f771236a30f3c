"""The README's main job: the Beluga tutorial's chain and graph, run as Prefect flows.

Runs on Prefect's embedded (ephemeral) API unless PREFECT_API_URL points at a server.
"""

from __future__ import annotations

import time

from prefect_beluga import Chain, Orchestrator, Runnable, memory


class SimpleStep(Runnable):
    """The tutorial's step: reports which step produced the output."""

    def __init__(self, name: str) -> None:
        self.name = name

    def invoke(self, input: dict, config=None) -> dict:
        return {"output": f"Result from {self.name}"}


def main() -> None:
    orchestrator = Orchestrator()
    chain = orchestrator.create_chain(
        [SimpleStep("step1"), SimpleStep("step2"), SimpleStep("step3")],
        name="tutorial-chain",
        timeout=30,
        retries=3,
        retry_delay=2.0,
        memory=memory.new_memory(memory.MemoryType.BUFFER),
    )
    started = time.perf_counter()
    result = chain.invoke({"input": "test"})
    print(f"chain result ({time.perf_counter() - started:.2f}s): {result}")
    started = time.perf_counter()
    result = chain.invoke({"input": "and again"})
    print(f"chain with memory ({time.perf_counter() - started:.2f}s): {result}")
    print("See the runs in the Prefect UI: `prefect server start`, then open http://127.0.0.1:4200")


if __name__ == "__main__":
    main()
