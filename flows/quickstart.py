"""The README's main job: the Beluga tutorial on Prefect, then a RAG pipeline over bundled docs.

Runs on Prefect's embedded (ephemeral) API unless PREFECT_API_URL points at a server. With
OPENAI_API_KEY set it uses OpenAI for embeddings and answers; without it, the offline hashing
embedder and the offline extractive model (which says so in every answer).

It runs in a namespace of its own, so running it against a production server touches nothing
else: its blocks are `quickstart-chat`, `quickstart-embedder` and `quickstart-store` (its own
store file, `quickstart-store-<embedder>.npz`, or the Pinecone namespace `quickstart`), and
every flow it runs is named `quickstart` or `quickstart-...` (`quickstart-rag-ingest`,
`quickstart-rag-answer`, ...), with artifact keys of the same names.

    python flows/quickstart.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

# Quiet the embedded server's usage telemetry, which also contends for its SQLite database.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The embedded API starts in a subprocess; on a busy 2-core machine that can take over 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from agent import agent_answer  # noqa: E402
from prefect import flow  # noqa: E402
from rag_answer import rag_answer  # noqa: E402
from rag_ingest import rag_ingest  # noqa: E402

from prefect_beluga import Orchestrator, Runnable, memory, rag  # noqa: E402
from prefect_beluga.artifacts import publish_answers  # noqa: E402
from prefect_beluga.blocks import (  # noqa: E402
    asave_default_blocks,
    block_names,
    load_rag_components,
)

NAMESPACE = "quickstart"
BLOCKS = block_names(NAMESPACE)
CHAT, EMBEDDER, STORE = BLOCKS["chat"], BLOCKS["embedder"], BLOCKS["store"]
# The deployable flows, under names of the quickstart's own.
ingest = rag_ingest.with_options(name=f"{NAMESPACE}-rag-ingest")
answer_flow = rag_answer.with_options(name=f"{NAMESPACE}-rag-answer")
agent_flow = agent_answer.with_options(name=f"{NAMESPACE}-agent-answer")

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


def components() -> dict[str, str]:
    """The quickstart's own blocks, as the flows' parameters."""
    return {"chat_model_block": CHAT, "embedder_block": EMBEDDER, "vector_store_block": STORE}


async def timed(label: str, call):
    started = time.perf_counter()
    result = await call
    print(f"{label} ({time.perf_counter() - started:.2f}s): {result}")
    return result


async def tutorial(orchestrator: Orchestrator) -> None:
    chain = orchestrator.create_chain(
        [SimpleStep("step1"), SimpleStep("step2"), SimpleStep("step3")],
        name=f"{NAMESPACE}-tutorial-chain",
        timeout=30,
        retries=3,
        retry_delay=2.0,
        memory=memory.new_memory(memory.MemoryType.BUFFER),
    )
    await timed("chain", chain.ainvoke({"input": "test"}))
    await timed("chain with memory", chain.ainvoke({"input": "and again"}))

    graph = orchestrator.create_graph(name=f"{NAMESPACE}-tutorial-graph")
    graph.add_node("step1", SimpleStep("node1"))
    graph.add_node("step2", SimpleStep("node2"))
    graph.add_node("step3", SimpleStep("node3"))
    graph.add_edge("step1", "step2")
    graph.add_edge("step1", "step3")  # step2 and step3 run at the same time
    graph.set_entry_point(["step1"])
    graph.set_finish_point(["step2", "step3"])
    print(graph.to_mermaid())
    await timed("graph", graph.ainvoke({"input": "test"}))


async def rag_pipeline() -> None:
    for line in (await asave_default_blocks(overwrite=False, prefix=NAMESPACE)).values():
        print(line)
    report = await ingest(str(DOCS), embedder_block=EMBEDDER, vector_store_block=STORE)
    print(f"ingest: {report['written']} chunks written, {report['unchanged']} unchanged, {report['removed']} removed "
          f"(re-runs skip them), {report['seconds']}s")
    answers = []
    for question in QUESTIONS:
        started = time.perf_counter()
        answer = await answer_flow(question, **components())
        answers.append({"question": question, **answer})
        print(f"\nQ: {question}\nA: {answer['output']}\n   sources: {', '.join(answer['sources'])}"
              f"  ({time.perf_counter() - started:.2f}s, {answer['usage']['total_tokens']} tokens"
              f"{', cached' if 'generate' in answer['cached'] else ''})")
    await publish_answers(answers, key="quickstart-answers")
    # The same questions again: the cross-run cache answers them, no embedding or model call.
    started = time.perf_counter()
    again = [await answer_flow(question, **components()) for question in QUESTIONS]
    cached = sum("generate" in answer["cached"] for answer in again)
    print(f"\nsame {len(QUESTIONS)} questions again: {cached} of {len(QUESTIONS)} answers (cached), "
          f"{len(QUESTIONS) - cached} model call(s), {time.perf_counter() - started:.2f}s")


async def streamed_answer(question: str) -> None:
    """One answer streamed token by token as the model writes it (docs/streaming.md)."""
    llm, embedder, store = await load_rag_components(CHAT, EMBEDDER, STORE)
    chain = rag.build_rag_chain(store, embedder, llm, name=f"{NAMESPACE}-rag-streamed")
    # Straight to stdout: the flow's log_prints would make every token a log line.
    sys.stdout.write(f"\nQ (streamed): {question}\nA: ")
    async for event in chain.astream({"input": question}, tokens=True):
        if "__token__" in event:
            sys.stdout.write(event["__token__"]["text"])
            sys.stdout.flush()
    sys.stdout.write("\n\n")


@flow(name="quickstart", log_prints=True)
async def quickstart() -> None:
    """The tutorial's chain and graph, then ingest the bundled docs and answer questions from them
    (a RAG chain, then an agent using the store as a tool)."""
    await tutorial(Orchestrator())
    await rag_pipeline()
    await streamed_answer(QUESTIONS[0])
    # An agent deciding when to search the same store (a tool); offline, it searches once and quotes.
    answer = await agent_flow("How are Prefect tasks retried?", **components())
    print(f"\nagent: {answer['output']}\n   searched: {answer['searches']}; sources: {', '.join(answer['sources'])}")
    api_url = os.environ.get("PREFECT_API_URL")
    if api_url:
        print(f"\nSee these runs in the Prefect UI: {api_url.removesuffix('/api')}/runs")
    else:
        print("\nThese runs went to Prefect's embedded API. To see them in the UI: run `prefect server start`, "
              "set PREFECT_API_URL=http://127.0.0.1:4200/api, run this again, and open http://127.0.0.1:4200")


if __name__ == "__main__":
    asyncio.run(quickstart())
