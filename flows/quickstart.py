"""The README's main job: the Beluga tutorial on Prefect, then a RAG pipeline over bundled docs.

Runs on Prefect's embedded (ephemeral) API unless PREFECT_API_URL points at a server. With
OPENAI_API_KEY set it uses OpenAI for embeddings and answers; without it, the offline hashing
embedder and the offline extractive model (which says so in every answer).

    python flows/quickstart.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# Quiet the embedded server's usage telemetry, which also contends for its SQLite database.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect_beluga import Orchestrator, Runnable, embeddings, llms, memory, rag, vectorstores  # noqa: E402

DOCS = Path(__file__).parent / "docs"
QUESTIONS = [
    "What is machine learning?",
    "How does retrieval-augmented generation answer a question?",
    "How are Prefect tasks retried?",
]


class SimpleStep(Runnable):
    """The tutorial's step: reports which step produced the output."""

    def __init__(self, name: str) -> None:
        self.name = name

    def invoke(self, input: dict, config=None) -> dict:
        return {"output": f"Result from {self.name}"}


def timed(label: str, call):
    started = time.perf_counter()
    result = call()
    print(f"{label} ({time.perf_counter() - started:.2f}s): {result}")
    return result


def tutorial(orchestrator: Orchestrator) -> None:
    chain = orchestrator.create_chain(
        [SimpleStep("step1"), SimpleStep("step2"), SimpleStep("step3")],
        name="tutorial-chain",
        timeout=30,
        retries=3,
        retry_delay=2.0,
        memory=memory.new_memory(memory.MemoryType.BUFFER),
    )
    timed("chain", lambda: chain.invoke({"input": "test"}))
    timed("chain with memory", lambda: chain.invoke({"input": "and again"}))

    graph = orchestrator.create_graph(name="tutorial-graph")
    graph.add_node("step1", SimpleStep("node1"))
    graph.add_node("step2", SimpleStep("node2"))
    graph.add_node("step3", SimpleStep("node3"))
    graph.add_edge("step1", "step2")
    graph.add_edge("step1", "step3")  # step2 and step3 run at the same time
    graph.set_entry_point(["step1"])
    graph.set_finish_point(["step2", "step3"])
    print(graph.to_mermaid())
    timed("graph", lambda: graph.invoke({"input": "test"}))


def rag_pipeline() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        embedder = embeddings.OpenAIEmbedder()
        llm = llms.Factory().create_provider("openai", llms.Config(provider="openai", model_name="gpt-4o-mini"))
    else:
        print("OPENAI_API_KEY is not set: using the offline hashing embedder and the offline extractive model.")
        embedder = embeddings.HashingEmbedder()
        llm = llms.Factory().create_provider("offline", llms.Config(provider="offline"))
    store = vectorstores.InMemoryVectorStore()
    chunks = rag.TokenTextSplitter(chunk_size=120, chunk_overlap=20).split_documents(rag.load_documents(DOCS))
    started = time.perf_counter()
    store.add_documents(chunks, embedder)
    print(f"ingested {len(chunks)} chunks from {DOCS} in {time.perf_counter() - started:.2f}s")
    chain = rag.build_rag_chain(store, embedder, llm, k=2, retries=2, retry_delay=1.0)
    for question in QUESTIONS:
        started = time.perf_counter()
        answer = chain.invoke(question)
        print(f"\nQ: {question}\nA: {answer['output']}\n   sources: {', '.join(answer['sources'])}"
              f"  ({time.perf_counter() - started:.2f}s, {answer['usage']['total_tokens']} tokens)")


def main() -> None:
    tutorial(Orchestrator())
    rag_pipeline()
    print("\nSee the runs in the Prefect UI: run `prefect server start`, set "
          "PREFECT_API_URL=http://127.0.0.1:4200/api, run this again, and open http://127.0.0.1:4200")


if __name__ == "__main__":
    main()
