"""What the cross-run cache saves, and what a cache hit costs.

A 3-step RAG chain (`rag.build_rag_chain(..., cache=True)`: embed-query, retrieve, generate)
against a loopback OpenAI server answering every request after `--latency` seconds (default
0.5 s), on Prefect's ephemeral API in a private PREFECT_HOME, one process:

- cold: `--questions` distinct questions, first time (embedding + model call each);
- warm: the same questions again (embed-query and generate are cache hits; retrieve runs);
- baseline: the same chain shape with the two cached steps replaced by uncached no-op steps
  (noop, retrieve, noop) on the same input, interleaved with the warm calls.

The cost of one hit over an uncached trivial step is (warm - baseline) / 2, from medians (and
from trimmed means). Between runs the benchmark idles `--gap` seconds, not timed (see
chain_overhead.py on the embedded SQLite API's 503s).

    python benchmarks/cache.py [--questions 5] [--repeat 20] [--latency 0.5] [--gap 0.3]
"""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: a private home (its own result storage too), no analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-cache-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import argparse
import asyncio
import platform
import statistics
import time
from typing import Any

from prefect_beluga import Chain
from prefect_beluga.embeddings.openai import OpenAIEmbedder
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.orchestration import cache_hits
from prefect_beluga.rag import build_rag_chain
from prefect_beluga.rag.steps import RetrievalStep
from prefect_beluga.schema import Document
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.vectorstores.inmemory import InMemoryVectorStore

KEY = "sk-bench"
DOCS = [
    "Prefect retries a task when it fails, waiting retry_delay_seconds between attempts.",
    "Retrieval-augmented generation answers from passages retrieved from a vector store.",
    "A cache hit returns the stored result of a task without running it again.",
    "Machine learning fits models to data so that they predict unseen examples.",
]


async def noop(state: dict[str, Any]) -> dict[str, Any]:
    """The uncached trivial step the hit is compared with."""
    return {}


def trimmed_mean(samples: list[float], cut: float = 0.1) -> float:
    ordered = sorted(samples)
    drop = int(len(ordered) * cut)
    return statistics.fmean(ordered[drop: len(ordered) - drop] or ordered)


async def main(questions: int, repeat: int, latency: float, gap: float) -> None:
    with OpenAIServer(latency=latency, dimension=256) as server:
        embedder = OpenAIEmbedder("text-embedding-3-small", api_key=KEY, base_url=server.base_url, dimension=256)
        config = Config(provider="openai", model_name="gpt-4o-mini", api_key=KEY, base_url=server.base_url)
        llm = OpenAIChatModel(config)
        store = InMemoryVectorStore()
        await store.aadd_documents([Document(page_content=t, metadata={"source": f"d{i}"}) for i, t in enumerate(DOCS)],
                                   embedder)
        rag = build_rag_chain(store, embedder, llm, k=2, name="bench-cache", cache=True)
        baseline = Chain([noop, RetrievalStep(store, embedder, 2), noop], name="bench-cache-baseline")
        asked = [f"Question {i}: how are Prefect tasks retried?" for i in range(questions)]
        requests_before = len(server.requests)

        async def timed(chain: Chain, question: str, state: dict[str, Any] | None = None) -> float:
            started = time.perf_counter()
            await chain.ainvoke(state or {"input": question})
            elapsed = time.perf_counter() - started
            await asyncio.sleep(gap)
            return elapsed

        await timed(baseline, "warm-up", {"input": "warm-up", "query_vector": [1.0] + [0.0] * 255})
        cold = [await timed(rag, q) for q in asked]
        cold_requests = len(server.requests) - requests_before
        # The baseline sees the same state the warm chain's retrieve step sees (the stored vector).
        vectors = {q: await embedder.aembed_query(q) for q in asked}
        requests_before = len(server.requests)
        warm: list[float] = []
        base: list[float] = []
        hits = 0
        for round_ in range(repeat):
            for q in asked:
                pair = [("warm", rag, {"input": q}), ("base", baseline, {"input": q, "query_vector": vectors[q]})]
                for label, chain, state in pair if round_ % 2 == 0 else reversed(pair):
                    if label == "warm":
                        with cache_hits() as record:
                            warm.append(await timed(chain, q, state))
                        hits += len(record.hits)
                    else:
                        base.append(await timed(chain, q, state))
        warm_requests = len(server.requests) - requests_before

    print(f"\nCache: 3-step RAG chain, {latency * 1e3:.0f} ms per loopback OpenAI request, {questions} questions; "
          f"{platform.python_version()}, {os.cpu_count()} CPU(s), {platform.platform()}")
    print("\n| run | calls | model/embedding requests | median | trimmed mean |")
    print("|---|---|---|---|---|")
    print(f"| cold (first time) | {len(cold)} | {cold_requests} | {statistics.median(cold) * 1e3:.0f} ms | "
          f"{trimmed_mean(cold) * 1e3:.0f} ms |")
    print(f"| warm (2 hits + retrieve) | {len(warm)} | {warm_requests} | {statistics.median(warm) * 1e3:.0f} ms | "
          f"{trimmed_mean(warm) * 1e3:.0f} ms |")
    print(f"| baseline (noop + retrieve + noop) | {len(base)} | - | {statistics.median(base) * 1e3:.0f} ms | "
          f"{trimmed_mean(base) * 1e3:.0f} ms |")
    per_hit_median = (statistics.median(warm) - statistics.median(base)) / 2
    per_hit_trimmed = (trimmed_mean(warm) - trimmed_mean(base)) / 2
    print(f"\ncache hits recorded: {hits} (expected {2 * len(warm)})")
    print(f"one hit over one uncached no-op step: {per_hit_median * 1e3:+.1f} ms (medians), "
          f"{per_hit_trimmed * 1e3:+.1f} ms (trimmed means); goal <= +10 ms")
    print(f"warm / cold: {statistics.median(warm) / statistics.median(cold):.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--gap", type=float, default=0.3)
    args = parser.parse_args()
    asyncio.run(main(args.questions, args.repeat, args.latency, args.gap))
