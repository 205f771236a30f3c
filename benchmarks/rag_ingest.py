"""RAG ingest: embed + upsert N chunks against loopback servers with injected latency.

Generates `--chunks` synthetic chunks (seeded, ~`--words` words each, with a source and a chunk
number as metadata) and ingests them with `OpenAIEmbedder` against the loopback OpenAI server
and `PineconeVectorStore` (official pinecone SDK) against the loopback Pinecone server. Both
servers answer every request after `--latency` seconds and run in a child process of their
own, as a remote service would: their CPU work (hashing texts into vectors, parsing upserts)
does not share this process's interpreter lock with the client being measured.

The limit. A request takes at least the injected latency and at most `c` are in flight, so a
stage sending `R` requests needs at least `ceil(R / c) * latency` seconds:

    embed stage:   R_e = ceil(N / embed_batch)   T_e = ceil(R_e / embed_concurrency)  * latency
    upsert stage:  R_u = ceil(N / upsert_batch)  T_u = ceil(R_u / upsert_concurrency) * latency

`add_documents` is a two-stage pipeline over slabs of S documents (`--slab-size`, default the
library's: about 1,000, rounded to whole rounds of `embed_batch * embed_concurrency`, here 900):
slab k is embedded in e_k = ceil(ceil(S_k / embed_batch) / embed_concurrency) * latency and
upserted in u_k (the same with the upsert batch and concurrency); slab k is handed to the
upsert stage once it is embedded and slab k - 1 is upserted, and slab k + 1 is embedded from
that moment. So, with h_0 = 0 and C_0 = 0,

    h_k = max(h_(k-1) + e_k, C_(k-1))    (slab k handed over)
    C_k = h_k + u_k                      (slab k upserted)      limit time = C_last

which is `sum(e_k) + u_last` when embedding is the slower stage (e_k >= u_(k-1), as here:
17 + 1 = 18 s), `e_1 + sum(u_k)` when upserting is, and never less than max(T_e, T_u). (The
old embed-everything-then-upsert-everything order had the limit T_e + T_u = 22 s.) `R_e` and
`R_u` are the requests the servers actually received; they equal the per-slab sums of the
formulas above when no token or 2 MB budget splits a batch, which is checked.
The limit counts no CPU time at all; the client's and the servers' CPU seconds are printed
beside it. `--latency 0` shows the CPU ceiling instead (no limit column).

The defaults (1 s per request, batches of 100, 3 embedding and 10 upsert requests in flight:
a limit of 300 and 1,000 chunks/s per stage) keep the loopback servers, pure Python on the
same 2-core machine, well under their own ceiling (~800 embeddings/s, the server counting
tokens and hashing vectors; ~3,000 upserted vectors/s), so the figure measures the client.
10 upserts in flight is more than asyncio's default thread pool (6 threads on 2 cores) holds.

Runs, each `--repeat` times after one warm-up (medians shown; the Pinecone namespace is
emptied between runs):

- embed:           `await embedder.aembed_documents(texts)`, against T_e;
- upsert:          `await store.aupsert(ids, vectors, docs)` with vectors embedded beforehand, against T_u;
- add_documents:   `await store.aadd_documents(docs, embedder)`, against the pipeline's C_last;
- in a flow:       `Chain([load, ingest]).ainvoke(...)`: `load` hands over the chunks, `ingest`
                   awaits the same add_documents, each step a Prefect task in a flow run of its
                   own (Prefect's ephemeral API, a temporary PREFECT_HOME), against C_last.
                   (The chunks cannot be the flow's input: Prefect caps flow-run parameters
                   at 512 KB.)

Memory: peak RSS of this process over a baseline taken after the chunks are generated (the
first add_documents run, so nothing freed before is reused), and tracemalloc's peak over one
extra, untimed add_documents run (Python allocations made by the ingest itself): bounded by
the two slabs of vectors in flight, not by all N.

    python benchmarks/rag_ingest.py [--chunks 5000] [--latency 1.0] [--repeat 3]
        [--embed-batch 100] [--embed-concurrency 3] [--upsert-batch 100] [--upsert-concurrency 10]
        [--slab-size S]
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile

# Before Prefect is imported: a private home (a shared SQLite database locks), no analytics.
# (The servers' child process inherits it.)
if multiprocessing.parent_process() is None:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-beluga-bench-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # busy CI

import argparse
import asyncio
import math
import random
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from prefect_beluga import Chain
from prefect_beluga.embeddings import OpenAIEmbedder
from prefect_beluga.schema import Document
from prefect_beluga.testing import OpenAIServer, PineconeServer
from prefect_beluga.vectorstores import PineconeVectorStore, document_id
from prefect_beluga.vectorstores.base import check_slab_size

OPENAI_KEY, PINECONE_KEY = "sk-bench", "pc-bench"
EMBEDDINGS, UPSERT = "/v1/embeddings", "/vectors/upsert"
NAMESPACE = "bench"


# -- the servers, in a child process -------------------------------------------------------------


def serve(conn: Connection, latency: float, dimension: int) -> None:
    """Run both loopback servers; answer "counts" and "reset" over `conn` until "stop"."""
    with OpenAIServer(api_key=OPENAI_KEY, dimension=dimension, latency=latency) as openai, \
            PineconeServer(api_key=PINECONE_KEY, dimension=dimension, latency=latency) as pinecone:
        conn.send((openai.base_url, pinecone.url))
        while (command := conn.recv()) != "stop":
            if command == "counts":
                conn.send({
                    "embed_requests": len(openai.requests_to(EMBEDDINGS)),
                    "embed_in_flight": openai.max_in_flight,
                    "upsert_requests": len(pinecone.requests_to(UPSERT)),
                    "upsert_in_flight": pinecone.max_in_flight,
                    "vectors": pinecone.vector_count(NAMESPACE),
                    "cpu": cpu_seconds(),
                })
            elif command == "reset":
                openai.reset()
                pinecone.reset()
                conn.send("ok")


def cpu_seconds() -> float:
    """CPU time this process has used so far, all threads, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Servers:
    """Handle on the child process running both servers."""

    def __init__(self, latency: float, dimension: int) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=serve, args=(child, latency, dimension), daemon=True
        )
        self._process.start()
        self.openai_url, self.pinecone_url = self._conn.recv()

    def counts(self) -> dict[str, Any]:
        self._conn.send("counts")
        return self._conn.recv()

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join(timeout=10)


# -- the workload ----------------------------------------------------------------------------------


def make_chunks(count: int, words: int, seed: int = 7) -> list[Document]:
    """`count` chunks of about `words` words from a 5,000-word vocabulary, 50 chunks per source."""
    rng = random.Random(seed)
    vocabulary = [f"{rng.choice('bcdfglmnprst')}{rng.choice('aeiou')}{rng.choice('klmnrst')}{i}" for i in range(5000)]
    return [
        Document(
            page_content=" ".join(rng.choices(vocabulary, k=words + rng.randint(-10, 10))) + ".",
            metadata={"source": f"doc-{i // 50:05d}.md", "chunk": i % 50},
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class Setup:
    chunks: int
    latency: float
    embed_batch: int
    embed_concurrency: int
    upsert_batch: int
    upsert_concurrency: int
    slab_size: int

    def stage_seconds(self, requests: int, concurrency: int) -> float:
        """Least time `requests` requests take, `concurrency` at a time, each `latency` long."""
        return math.ceil(requests / concurrency) * self.latency

    def slabs(self) -> list[int]:
        """The sizes of add_documents' slabs, in order."""
        return [min(self.slab_size, self.chunks - start) for start in range(0, self.chunks, self.slab_size)]

    def requests(self) -> tuple[int, int]:
        """Embedding and upsert requests add_documents sends when no budget splits a batch."""
        slabs = self.slabs()
        return (sum(math.ceil(s / self.embed_batch) for s in slabs),
                sum(math.ceil(s / self.upsert_batch) for s in slabs))

    def pipeline_seconds(self) -> float:
        """Least time of add_documents: the recurrence in the module docstring."""
        handed = upserted = 0.0
        for slab in self.slabs():
            embed = self.stage_seconds(math.ceil(slab / self.embed_batch), self.embed_concurrency)
            handed = max(handed + embed, upserted)
            upserted = handed + self.stage_seconds(math.ceil(slab / self.upsert_batch), self.upsert_concurrency)
        return upserted


@dataclass
class Run:
    seconds: float
    client_cpu: float
    server_cpu: float
    counts: dict[str, Any]


async def measure(servers: Servers, call: Callable[[], Awaitable[Any]]) -> Run:
    servers.reset()
    server_cpu = servers.counts()["cpu"]
    client_cpu = cpu_seconds()
    start = time.perf_counter()
    await call()
    seconds = time.perf_counter() - start
    counts = servers.counts()
    return Run(seconds, cpu_seconds() - client_cpu, counts["cpu"] - server_cpu, counts)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def benchmark(args: argparse.Namespace, servers: Servers) -> None:
    embedder = OpenAIEmbedder(api_key=OPENAI_KEY, base_url=servers.openai_url, dimension=args.dimension,
                              batch_size=args.embed_batch, max_concurrency=args.embed_concurrency)
    setup = Setup(args.chunks, args.latency, args.embed_batch, args.embed_concurrency,
                  args.upsert_batch, args.upsert_concurrency, check_slab_size(args.slab_size, embedder))
    store = PineconeVectorStore(host=servers.pinecone_url, api_key=PINECONE_KEY, namespace=NAMESPACE,
                                dimension=args.dimension, batch_size=args.upsert_batch,
                                max_concurrency=args.upsert_concurrency)
    docs = make_chunks(args.chunks, args.words)
    texts = [d.page_content for d in docs]
    ids = [document_id(d) for d in docs]
    rss_before = rss_mb()

    def load(state: dict[str, Any]) -> dict[str, Any]:
        return {"documents": docs[: state["chunks"]]}

    async def ingest(state: dict[str, Any]) -> dict[str, Any]:
        ids = await store.aadd_documents(state["documents"], embedder, slab_size=args.slab_size)
        return {"ids": len(ids), "documents": None}

    chain = Chain([load, ingest], name="rag-ingest-bench")
    kinds: dict[str, Callable[[], Awaitable[Any]]] = {
        "add_documents": lambda: store.aadd_documents(docs, embedder, slab_size=args.slab_size),
        "embed": lambda: embedder.aembed_documents(texts),
        "upsert": lambda: store.aupsert(ids, vectors, docs),
        "in a flow": lambda: chain.ainvoke({"chunks": len(docs)}),
    }
    first = await measure(servers, kinds["add_documents"])  # also the warm-up; RSS peaks here
    rss_peak = rss_mb()
    vectors = await embedder.aembed_documents(texts)
    await chain.ainvoke({"chunks": 10})  # warm-up: the API is up, the flow registered
    runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
    for i in range(args.repeat):
        for kind, call in kinds.items():
            runs[kind].append(await measure(servers, call))
        print(f"  round {i + 1}/{args.repeat}", file=sys.stderr, flush=True)

    servers.reset()
    tracemalloc.start()
    await store.aadd_documents(docs, embedder, slab_size=args.slab_size)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    report(setup, args, runs, first)
    print(f"\nPeak memory of the client process (add_documents, {args.chunks} chunks of dimension "
          f"{args.dimension}):\n")
    print("| figure | MB |\n| --- | ---: |")
    print(f"| peak RSS over the baseline (chunks generated) | {rss_peak - rss_before:.0f} |")
    print(f"| peak RSS of the process | {rss_peak:.0f} |")
    print(f"| tracemalloc peak (Python allocations of one add_documents) | {traced_peak:.0f} |")


def report(setup: Setup, args: argparse.Namespace, runs: dict[str, list[Run]], first: Run) -> None:
    counts = first.counts
    expected = setup.requests()
    if (counts["embed_requests"], counts["upsert_requests"]) != expected:
        print(f"note: requests {counts['embed_requests']}/{counts['upsert_requests']} differ from "
              f"the batches' {expected[0]}/{expected[1]} (a token or 2 MB budget split batches); "
              f"the limits below assume no split")
    embed_seconds = setup.stage_seconds(math.ceil(setup.chunks / setup.embed_batch), setup.embed_concurrency)
    upsert_seconds = setup.stage_seconds(math.ceil(setup.chunks / setup.upsert_batch), setup.upsert_concurrency)
    pipeline_seconds = setup.pipeline_seconds()
    limits = {"embed": embed_seconds, "upsert": upsert_seconds,
              "add_documents": pipeline_seconds, "in a flow": pipeline_seconds}
    print(
        f"\nRAG ingest: {setup.chunks} chunks (~{args.words} words, dimension {args.dimension}), "
        f"{setup.latency * 1e3:.0f} ms per request; embed: batches of {setup.embed_batch}, "
        f"{setup.embed_concurrency} concurrent; upsert: batches of {setup.upsert_batch}, "
        f"{setup.upsert_concurrency} concurrent; add_documents in slabs of {setup.slab_size} "
        f"(sequential limit T_e + T_u = {embed_seconds + upsert_seconds:.0f} s); median of {args.repeat} runs\n"
    )
    print("| run | requests | peak in flight | wall s | limit s | chunks/s | limit chunks/s | achieved / limit "
          "| client CPU s | servers' CPU s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, samples in runs.items():
        seconds = statistics.median(r.seconds for r in samples)
        last = samples[-1].counts
        requests = {"embed": f"{last['embed_requests']}", "upsert": f"{last['upsert_requests']}"}.get(
            kind, f"{last['embed_requests']} + {last['upsert_requests']}")
        in_flight = {"embed": f"{last['embed_in_flight']}", "upsert": f"{last['upsert_in_flight']}"}.get(
            kind, f"{last['embed_in_flight']} / {last['upsert_in_flight']}")
        if kind != "embed":
            assert last["vectors"] == setup.chunks, (kind, last)
        limit = limits[kind]  # 0 with --latency 0: no limit, the run shows the CPU ceiling
        print(
            f"| {kind} | {requests} | {in_flight} | {seconds:.2f} | {limit:.2f} | "
            f"{setup.chunks / seconds:.0f} | {f'{setup.chunks / limit:.0f}' if limit else '-'} | "
            f"{f'{limit / seconds:.0%}' if limit else '-'} | {statistics.median(r.client_cpu for r in samples):.2f} | "
            f"{statistics.median(r.server_cpu for r in samples):.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5000, help="chunks to ingest (default 5000)")
    parser.add_argument("--words", type=int, default=80, help="words per chunk, about (default 80)")
    parser.add_argument("--dimension", type=int, default=256, help="vector size (default 256)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per request (default 1.0)")
    parser.add_argument("--embed-batch", type=int, default=100, help="texts per embedding request (default 100)")
    parser.add_argument("--embed-concurrency", type=int, default=3, help="embedding requests in flight (default 3)")
    parser.add_argument("--upsert-batch", type=int, default=100, help="vectors per upsert (default 100)")
    parser.add_argument("--upsert-concurrency", type=int, default=10, help="upserts in flight (default 10)")
    parser.add_argument(
        "--slab-size",
        type=int,
        default=None,
        help="documents per add_documents slab (default: the library's, 900 here)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="measured runs of each kind (default 3)")
    args = parser.parse_args()
    servers = Servers(args.latency, args.dimension)
    try:
        asyncio.run(benchmark(args, servers))
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
