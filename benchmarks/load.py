"""Load: many concurrent chain and graph runs against the loopback servers, with latency.

A benchmark, not a timed test. In one process, on Prefect's ephemeral API (a temporary
PREFECT_HOME of its own; ``--server embedded``, the default) or against a real `prefect server`
started for the run on SQLite or on a throwaway PostgreSQL (``--server sqlite|postgresql``;
`prefect_beluga.testing.PrefectServer`), with the loopback OpenAI server (and the loopback Pinecone server for
the graphs) answering every request after `--latency` seconds:

1. Chains: one RAG chain object (retrieve from an `InMemoryVectorStore` of `--docs` chunks with
   query embeddings from the OpenAI embedder, then generate with `OpenAIChatModel`), one shared
   buffer memory, `--sessions` sessions. Each round invokes the chain once per session, all at
   once (`asyncio.gather` of `--sessions` `ainvoke`s, each its own flow run). Rounds 1-2 are
   timed (throughput); round 3 runs under tracemalloc (peak and retained Python memory).
   The reference: the same two steps written by hand as a Prefect ``@flow`` of two ``@task``s
   (no memory), ``--sessions`` runs at once, 2 rounds.
2. Graphs: `--graphs` concurrent runs of a graph retrieve (Pinecone, via the official SDK) ->
   two answers at once (two chat calls) -> combine.

Checks (the run fails with exit status 1 if one does not hold):

- no errors: every invocation returns;
- no cross-talk: after the rounds, each session's remembered turns are exactly its own questions
  and the replies to them, in order; and every chat request the server received names only one
  session (the history the model saw belongs to the asker);
- bounded memory: Python memory retained after a 200-invocation round (tracemalloc, after gc)
  stays under `--max-retained-mb`, and resident memory grows by less than `--max-rss-growth-mb`
  from round 2 to the end of round 3.

Prints throughput (invocations/s, end to end, including each flow run's creation), latency
percentiles, the servers' peak concurrency and memory figures.

    python benchmarks/load.py [--server embedded|sqlite|postgresql] [--sessions 200] [--graphs 20] [--latency 0.05]
"""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: a private home (a shared SQLite database locks), no analytics.
# Against a server (`--server sqlite|postgresql`), the parent process set PREFECT_API_URL.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-load-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # busy CI

import argparse
import asyncio
import gc
import re
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from prefect_beluga import Chain, Graph, llms, memory, rag
from prefect_beluga.embeddings import OpenAIEmbedder
from prefect_beluga.schema import Document
from prefect_beluga.testing import OpenAIServer, PineconeServer
from prefect_beluga.vectorstores import InMemoryVectorStore, PineconeVectorStore

OPENAI_KEY, PINECONE_KEY = "sk-load", "pc-load"
DIMENSION = 64
SESSION = re.compile(r"sess-\d{4}")
TOPICS = ["Prefect retries", "task caching", "vector search", "memory windows", "graph joins",
          "work pools", "deployments", "schedules", "artifacts", "blocks"]


def rss_mb() -> float:
    """Current resident memory (VmRSS), MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def documents(count: int) -> list[Document]:
    return [
        Document(
            page_content=f"Note {i} about {TOPICS[i % len(TOPICS)]}: detail {i * 7 % 101} of the handbook.",
            metadata={"source": f"handbook/{i // 10}.md", "chunk": i % 10},
        )
        for i in range(count)
    ]


def question(session: int, turn: int) -> str:
    return f"[sess-{session:04d}] turn {turn}: what do the notes say about {TOPICS[session % len(TOPICS)]}?"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(coroutine: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    try:
        result = await coroutine
    except Exception as exc:  # counted, not raised: the check is "no errors"
        result = exc
    return time.perf_counter() - started, result


async def chain_round(chain: Chain, sessions: int, turn: int) -> dict[str, Any]:
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(
        timed(chain.ainvoke({"input": question(s, turn), "session_id": f"sess-{s:04d}"})) for s in range(sessions)
    ))
    wall = time.perf_counter() - started
    errors = [r for _, r in outcomes if isinstance(r, BaseException)]
    latencies = [t for t, r in outcomes if not isinstance(r, BaseException)]
    wrong = [
        s for s, (_, r) in enumerate(outcomes)
        if not isinstance(r, BaseException) and question(s, turn) not in r["output"]
    ]
    return {"wall": wall, "errors": errors, "latencies": latencies, "wrong_answers": wrong}


def build_graph(store: PineconeVectorStore, embedder: OpenAIEmbedder, llm: llms.ChatModel) -> Graph:
    async def brief(state: dict[str, Any]) -> dict[str, Any]:
        reply = await llm.agenerate(f"Briefly: {state['input']}\n\n{state['context']}")
        return {"brief": reply.content}

    async def detailed(state: dict[str, Any]) -> dict[str, Any]:
        reply = await llm.agenerate(f"In detail: {state['input']}\n\n{state['context']}")
        return {"detailed": reply.content}

    def combine(state: dict[str, Any]) -> dict[str, Any]:
        return {"output": f"{state['brief']}\n---\n{state['detailed']}"}

    graph = Graph(name="load-graph", artifact=False)
    graph.add_node("retrieve", rag.RetrievalStep(store, embedder, k=3))
    graph.add_node("brief", brief).add_node("detailed", detailed).add_node("combine", combine)
    graph.add_edge("retrieve", "brief").add_edge("retrieve", "detailed")
    graph.add_edge("brief", "combine").add_edge("detailed", "combine")
    return graph.set_entry_point("retrieve").set_finish_point("combine")


def check_memory(shared: memory.BaseMemory, sessions: int, turns: int) -> list[str]:
    problems = []
    for s in range(sessions):
        remembered = shared.turns(f"sess-{s:04d}")
        expected = [question(s, t) for t in range(1, turns + 1)]
        if [q for q, _ in remembered] != expected:
            problems.append(f"sess-{s:04d} remembers {[q[:16] for q, _ in remembered]}")
        elif any(set(SESSION.findall(a)) != {f"sess-{s:04d}"} for _, a in remembered):
            problems.append(f"sess-{s:04d} remembers another session's reply")
    return problems


def check_requests(server: OpenAIServer) -> tuple[int, list[str]]:
    """Every chat request must name exactly one session (the asker's history only)."""
    chats = [r for r in server.requests_to("/v1/chat/completions") if SESSION.search(str(r.body))]
    problems = [
        f"a chat request names sessions {sorted(set(SESSION.findall(str(r.body))))}"
        for r in chats
        if len(set(SESSION.findall(str(r.body)))) != 1
    ]
    return len(chats), problems


def handwritten_flow(store: InMemoryVectorStore, embedder: OpenAIEmbedder, llm: llms.ChatModel) -> Any:
    """The reference: retrieve -> generate as a plain Prefect flow of two tasks (no memory)."""
    from prefect import flow, task

    @task(name="retrieve")
    async def retrieve(query: str) -> str:
        docs, _ = await store.asimilarity_search_by_query(query, 3, embedder)
        return "\n".join(d.page_content for d in docs)

    @task(name="generate")
    async def generate(query: str, context: str) -> str:
        return (await llm.agenerate(f"{query}\n\n{context}")).content

    @flow(name="load-handwritten", log_prints=False)
    async def handwritten(query: str) -> dict[str, str]:
        context = await retrieve(query)
        return {"output": await generate(query, context)}

    return handwritten


async def reference_round(handwritten: Any, sessions: int, turn: int) -> dict[str, Any]:
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(timed(handwritten(question(s, turn))) for s in range(sessions)))
    wall = time.perf_counter() - started
    return {"wall": wall, "errors": [r for _, r in outcomes if isinstance(r, BaseException)],
            "latencies": [t for t, r in outcomes if not isinstance(r, BaseException)]}


async def main(args: argparse.Namespace) -> int:
    failures: list[str] = []
    with OpenAIServer(api_key=OPENAI_KEY, dimension=DIMENSION, latency=args.latency) as openai_server, \
            PineconeServer(api_key=PINECONE_KEY, dimension=DIMENSION, latency=args.latency) as pinecone_server:
        embedder = OpenAIEmbedder(api_key=OPENAI_KEY, base_url=openai_server.base_url, dimension=DIMENSION,
                                  max_concurrency=8)
        llm = llms.Factory().create_provider("openai", llms.Config(
            provider="openai", model_name="gpt-4o-mini", api_key=OPENAI_KEY, base_url=openai_server.base_url))
        docs = documents(args.docs)
        store = InMemoryVectorStore()
        await store.aadd_documents(docs, embedder)
        pinecone = PineconeVectorStore(host=pinecone_server.url, api_key=PINECONE_KEY, namespace="load",
                                       dimension=DIMENSION, max_concurrency=8)
        await pinecone.aadd_documents(docs, embedder)

        shared = memory.new_memory(memory.MemoryType.BUFFER)
        chain = rag.build_rag_chain(store, embedder, llm, k=3, memory=shared, name="load-rag", retries=2)

        # Warm-up: Prefect's API, clients and the loops; its sessions are outside the checked range.
        warm = await asyncio.gather(*(timed(chain.ainvoke({"input": "warm-up", "session_id": f"warm-{i}"}))
                                      for i in range(5)))
        failures += [f"warm-up error: {r!r}" for _, r in warm if isinstance(r, BaseException)]
        gc.collect()
        rss_start, max_rss_start = rss_mb(), max_rss_mb()
        print(f"setup: {args.docs} chunks embedded into the in-memory store and Pinecone; "
              f"latency {args.latency * 1000:.0f} ms per request; RSS {rss_start:.0f} MB after warm-up")

        rounds = []
        for turn in (1, 2):
            openai_server.max_in_flight = 0
            result = chain_round(chain, args.sessions, turn)
            rounds.append(await result)
            rounds[-1]["server_peak"] = openai_server.max_in_flight
            gc.collect()
            rounds[-1]["rss"] = rss_mb()
        tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        openai_server.max_in_flight = 0
        rounds.append(await chain_round(chain, args.sessions, 3))
        rounds[-1]["server_peak"] = openai_server.max_in_flight
        gc.collect()
        traced_after, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rounds[-1]["rss"] = rss_mb()

        print(f"\nchains: {args.sessions} concurrent invocations per round (retrieve -> generate, "
              "one flow run each, one memory shared by all sessions)")
        print("| round | wall s | invocations/s | p50 s | p95 s | max s | errors | server peak in flight | RSS MB |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for number, r in enumerate(rounds, 1):
            lat = r["latencies"] or [float("nan")]
            note = " (tracemalloc on)" if number == 3 else ""
            print(
                f"| {number}{note} | {r['wall']:.1f} | {args.sessions / r['wall']:.1f} | "
                f"{statistics.median(lat):.2f} | {percentile(lat, 0.95):.2f} | {max(lat):.2f} | "
                f"{len(r['errors'])} | {r['server_peak']} | {r['rss']:.0f} |"
            )
            failures += [f"chain round {number}: {e!r}"[:300] for e in r["errors"][:5]]
            if r["errors"]:
                failures.append(f"chain round {number}: {len(r['errors'])} errors")
            if r["wrong_answers"]:
                failures.append(f"chain round {number}: {len(r['wrong_answers'])} answers to another question")

        memory_problems = check_memory(shared, args.sessions, 3)
        chats, request_problems = check_requests(openai_server)
        print(
            f"\ncross-talk: {args.sessions} sessions x 3 turns checked in memory: "
            f"{len(memory_problems)} wrong; {chats} chat requests checked (the history sent names only "
            f"the asker's session): {len(request_problems)} wrong"
        )
        failures += memory_problems[:5] + request_problems[:5]

        retained = (traced_after - traced_before) / 2**20
        rss_growth = rounds[2]["rss"] - rounds[1]["rss"]
        print(
            f"memory: round 3 under tracemalloc: peak {traced_peak / 2**20:.1f} MB traced, "
            f"{retained:.2f} MB retained after the round ({retained * 2**20 / args.sessions / 1024:.1f} KB "
            f"per invocation: the memory turns, Prefect's caches); RSS {rss_start:.0f} MB after warm-up -> "
            f"{rounds[0]['rss']:.0f} / {rounds[1]['rss']:.0f} / {rounds[2]['rss']:.0f} MB after rounds 1-3; "
            f"ru_maxrss {max_rss_start:.0f} -> {max_rss_mb():.0f} MB"
        )
        if retained > args.max_retained_mb:
            failures.append(f"retained {retained:.1f} MB after a round, over {args.max_retained_mb} MB")
        if rss_growth > args.max_rss_growth_mb:
            failures.append(f"RSS grew {rss_growth:.0f} MB from round 2 to 3, over {args.max_rss_growth_mb} MB")

        # The reference: a hand-written Prefect flow, same steps, same concurrency.
        handwritten = handwritten_flow(store, embedder, llm)
        await asyncio.gather(*(timed(handwritten("warm-up")) for _ in range(5)))
        references = [await reference_round(handwritten, args.sessions, turn) for turn in (1, 2)]
        print(
            f"\nreference: hand-written Prefect flow (@flow of @task retrieve -> @task generate, no memory), "
            f"{args.sessions} concurrent runs per round"
        )
        print("| round | wall s | runs/s | p50 s | p95 s | max s | errors |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for number, r in enumerate(references, 1):
            lat = r["latencies"] or [float("nan")]
            print(
                f"| {number} | {r['wall']:.1f} | {args.sessions / r['wall']:.1f} | {statistics.median(lat):.2f} | "
                f"{percentile(lat, 0.95):.2f} | {max(lat):.2f} | {len(r['errors'])} |"
            )
        # Not a failure of this package: reported, as Prefect's own result on this server.
        reference_errors = sum(len(r["errors"]) for r in references)
        print(
            f"summary ({args.server}): chains {args.sessions / rounds[0]['wall']:.1f} / "
            f"{args.sessions / rounds[1]['wall']:.1f} invocations/s (rounds 1/2); hand-written flow "
            f"{args.sessions / references[0]['wall']:.1f} / {args.sessions / references[1]['wall']:.1f} runs/s; "
            f"hand-written errors {reference_errors}"
            + (
                f" (first: {references[0]['errors'][:1] or references[1]['errors'][:1]!r})"[:300]
                if reference_errors
                else ""
            )
        )

        # Graphs.
        graph = build_graph(pinecone, embedder, llm)
        await graph.ainvoke({"input": "warm-up"})
        openai_server.max_in_flight = 0
        before = dict(pinecone_server.request_counts)
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                timed(
                    graph.ainvoke({"input": f"[graph-{g:03d}] what do the notes say about {TOPICS[g % len(TOPICS)]}?"})
                )
                for g in range(args.graphs)
            )
        )
        wall = time.perf_counter() - started
        errors = [r for _, r in outcomes if isinstance(r, BaseException)]
        latencies = [t for t, r in outcomes if not isinstance(r, BaseException)] or [float("nan")]
        mixed = [
            g
            for g, (_, r) in enumerate(outcomes)
            if not isinstance(r, BaseException) and set(re.findall(r"graph-\d{3}", r["output"])) != {f"graph-{g:03d}"}
        ]
        queries = pinecone_server.request_counts.get("/query", 0) - before.get("/query", 0)
        print(f"\ngraphs: {args.graphs} concurrent runs of retrieve (Pinecone) -> brief || detailed (chat) -> combine")
        print(
            f"wall {wall:.1f} s, {args.graphs / wall:.2f} graph runs/s ({4 * args.graphs / wall:.1f} node runs/s), "
            f"p50 {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s, errors {len(errors)}, "
            f"answers mixed between runs {len(mixed)}, Pinecone queries {queries}, "
            f"OpenAI server peak in flight {openai_server.max_in_flight}"
        )
        failures += [f"graph: {e!r}"[:300] for e in errors[:5]]
        if mixed:
            failures.append(f"graph: {len(mixed)} runs got another run's answer")
        if queries != args.graphs:
            failures.append(f"graph: {queries} Pinecone queries for {args.graphs} runs")
        pinecone.close()

    print(f"\nmax RSS of the process: {max_rss_mb():.0f} MB")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nOK: no errors, no cross-talk, bounded memory")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200, help="concurrent chain invocations per round")
    parser.add_argument("--graphs", type=int, default=20, help="concurrent graph runs")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the loopback servers wait per request")
    parser.add_argument("--docs", type=int, default=500, help="chunks in the stores")
    parser.add_argument("--max-retained-mb", type=float, default=64.0)
    parser.add_argument("--max-rss-growth-mb", type=float, default=150.0)
    parser.add_argument(
        "--server",
        choices=("embedded", "sqlite", "postgresql"),
        default="embedded",
        help="Prefect's ephemeral API in this process, or a `prefect server` on SQLite / PostgreSQL",
    )
    args = parser.parse_args()
    if args.server != "embedded" and not os.environ.get("BELUGA_LOAD_SERVER"):
        # Prefect reads its settings when it is imported: run the benchmark in a child process
        # whose environment points at the server.
        from prefect_beluga.testing.prefect_server import PrefectServer

        with PrefectServer(database=args.server) as server:
            print(f"prefect server on {args.server} at {server.api_url}", flush=True)
            env = {**server.env, "BELUGA_LOAD_SERVER": args.server}
            sys.exit(subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env).returncode)
    sys.exit(asyncio.run(main(args)))
