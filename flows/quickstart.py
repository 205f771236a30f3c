"""The README's main job: the Beluga tutorial's chain and graph, run as Prefect flows.

Until the RAG quickstart lands, this runs the tutorial's examples: a three-step chain with
retries, a timeout and memory, and the step-3 graph whose two branches run concurrently.

Runs on Prefect's embedded (ephemeral) API unless PREFECT_API_URL points at a server.
"""

from __future__ import annotations

import os
import time

# Quiet the embedded server's usage telemetry, which also contends for its SQLite database.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

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

    graph = orchestrator.create_graph(name="tutorial-graph")
    graph.add_node("step1", SimpleStep("node1"))
    graph.add_node("step2", SimpleStep("node2"))
    graph.add_node("step3", SimpleStep("node3"))
    graph.add_edge("step1", "step2")
    graph.add_edge("step1", "step3")  # step2 and step3 run at the same time
    graph.set_entry_point(["step1"])
    graph.set_finish_point(["step2", "step3"])
    print(graph.to_mermaid())
    started = time.perf_counter()
    result = graph.invoke({"input": "test"})
    print(f"graph result ({time.perf_counter() - started:.2f}s): {result}")
    print("See the runs in the Prefect UI: `prefect server start`, then open http://127.0.0.1:4200")


if __name__ == "__main__":
    main()
