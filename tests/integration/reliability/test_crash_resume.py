"""Crash and resume: a run SIGKILLed midway, then run again, completes without recomputing the
steps that had finished and without duplicating anything.

Both runs happen in subprocesses on a real `prefect server` (the module-scoped `prefect_server`
fixture); the loopback OpenAI and Pinecone servers run in this process and count what reached
them, so "not recomputed" and "not duplicated" are read off the servers, not the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from prefect_beluga import rag
from prefect_beluga.rag.ingest import with_ids
from prefect_beluga.testing.helpers import eventually
from prefect_beluga.testing.openai_server import OpenAIServer
from prefect_beluga.testing.pinecone_server import PineconeServer

from .conftest import vectors_cell

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
FLOWS = ROOT / "flows"
EMBED, UPSERT, CHAT = "/v1/embeddings", "/vectors/upsert", "/v1/chat/completions"
DIM = 64
CHUNK_SIZE, BATCH_SIZE = 12, 4

pytestmark = pytest.mark.timeout(240)


def child_env(server) -> dict[str, str]:
    env = dict(server.env)
    env["PYTHONPATH"] = os.pathsep.join([str(FLOWS), str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    return env


def spawn(code: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True)


def wait_for(
    condition: Callable[[], bool], child: subprocess.Popen, what: str, stderr: Path, timeout: float = 120
) -> None:
    try:
        eventually(condition, what, timeout=timeout, interval=0.02, process=child)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stderr.read_text()[-3000:]}") from None


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL


def texts_embedded(server: OpenAIServer, since: int = 0) -> list[str]:
    return [text for r in server.requests_to(EMBED)[since:] for text in r.body["input"]]


# --- the ingest flow ---------------------------------------------------------------------------------

INGEST = """
    import asyncio, json, sys
    from pydantic import SecretStr
    from prefect_beluga.blocks import EmbedderBlock, OpenAICredentials, PineconeCredentials, PineconeVectorStoreBlock
    from rag_ingest import rag_ingest

    openai_url, pinecone_url, namespace, source, suffix = sys.argv[1:]
    names = {{"embedder_block": "crash-emb-" + suffix, "vector_store_block": "crash-pc-" + suffix}}
    credentials = OpenAICredentials(api_key=SecretStr("sk-test"), base_url=openai_url)
    EmbedderBlock(provider="openai", dimension={dim}, batch_size={batch}, credentials=credentials).save(
        names["embedder_block"], overwrite=True)
    PineconeVectorStoreBlock(host=pinecone_url, namespace=namespace, batch_size={batch},
                             credentials=PineconeCredentials(api_key=SecretStr("pc-test"))).save(
        names["vector_store_block"], overwrite=True)
    print("blocks saved", flush=True)
    report = asyncio.run(rag_ingest(source, chunk_size={chunk}, chunk_overlap=0, batch_size={batch}, **names))
    print(json.dumps(report), flush=True)
"""


def write_docs(folder: Path) -> None:
    folder.mkdir()
    for topic in ("prefect", "pinecone", "embeddings"):
        sentences = [f"Sentence {i} about {topic}: it has {i} parts and runs in step {i * 3}." for i in range(8)]
        (folder / f"{topic}.md").write_text(f"# {topic.title()}\n\n" + " ".join(sentences) + "\n")


def test_killed_ingest_resumes_without_re_embedding_or_duplicating(prefect_server, tmp_path, report):
    source = tmp_path / "docs"
    write_docs(source)
    chunks = with_ids(rag.TokenTextSplitter(CHUNK_SIZE, 0).split_documents(rag.load_documents(str(source))))
    expected = {c.id for c in chunks}
    assert len(expected) >= 8 * BATCH_SIZE  # enough batches to be killed midway
    namespace, suffix = f"crash-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:8]
    env, stderr = child_env(prefect_server), tmp_path / "stderr.log"
    started = time.monotonic()
    # Every embeddings request takes 0.25 s: a run takes a few seconds, long enough to kill it midway.
    with (
        OpenAIServer(api_key="sk-test", dimension=DIM, latency=0.25) as openai_server,
        PineconeServer(api_key="pc-test", dimension=DIM) as pinecone_server,
    ):
        args = [openai_server.base_url, pinecone_server.url, namespace, str(source), suffix]
        code = INGEST.format(dim=DIM, batch=BATCH_SIZE, chunk=CHUNK_SIZE)
        first = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=open(stderr, "ab"),
            text=True,
        )
        try:
            wait_for(
                lambda: pinecone_server.vector_count(namespace) >= 3 * BATCH_SIZE,
                first,
                "three batches were written",
                stderr,
            )
            kill(first)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
        time.sleep(0.3)  # an upsert the child sent just before dying may still be being applied
        kept = set(pinecone_server.vectors(namespace))
        assert kept < expected and len(kept) % BATCH_SIZE == 0, "killed midway, between whole batches"
        embedded_before = len(texts_embedded(openai_server))
        requests_before = len(openai_server.requests_to(EMBED))
        upserts_before = len(pinecone_server.requests_to(UPSERT))

        second = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert second.returncode == 0, second.stderr[-3000:]
        result = json.loads(second.stdout.strip().splitlines()[-1])

        missing = expected - kept
        again = texts_embedded(openai_server, since=requests_before)
        # Only the missing chunks were embedded again, each once (texts may repeat across chunks: compare multisets).
        assert Counter(again) == Counter(c.page_content for c in chunks if c.id in missing), (
            f"kept {len(kept)}, missing {len(missing)}, embedded again {len(again)}"
        )
        assert (result["chunks"], result["written"], result["unchanged"]) == (len(expected), len(missing), len(kept))
        assert len(pinecone_server.requests_to(UPSERT)) - upserts_before == -(-len(missing) // BATCH_SIZE)
        stored = pinecone_server.vectors(namespace)
        assert set(stored) == expected and pinecone_server.vector_count(namespace) == len(expected)
        report(
            component="ingest flow (openai + pinecone)",
            path="subprocess, prefect server",
            fault=f"SIGKILL after {len(kept)}/{len(expected)} chunks written",
            attempts="2 runs",
            outcome=f"ok; run 1 embedded {embedded_before}, run 2 embedded {len(again)} (the missing ones)",
            vectors=vectors_cell(len(expected), len(stored)),
            seconds=f"{time.monotonic() - started:.1f}",
        )


# --- a graph in a workflow -----------------------------------------------------------------------------

RUN_GRAPH = """
    import sys, time
    from crash_graph import workflow
    workflow_id, run_id = workflow.execute(
        {"topic": "resume", "log": sys.argv[1], "gate": sys.argv[2], "base_url": sys.argv[3]}
    )
    print(run_id, flush=True)
    time.sleep(600)
"""

RETRY_GRAPH = """
    import json, sys
    from crash_graph import workflow
    run_id = sys.argv[1]
    print(workflow.status(run_id), flush=True)
    workflow.retry(run_id)
    print(json.dumps(workflow.get_result(workflow.workflow_id, run_id, timeout=120)), flush=True)
"""


def test_killed_graph_workflow_resumes_without_recomputing_finished_nodes(prefect_server, tmp_path, report):
    log, gate, stderr = tmp_path / "nodes.log", tmp_path / "gate", tmp_path / "stderr.log"
    env = child_env(prefect_server)
    started = time.monotonic()
    with OpenAIServer(api_key="sk-test") as openai_server:
        first = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(RUN_GRAPH), str(log), str(gate), openai_server.base_url],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=open(stderr, "ab"),
            text=True,
        )
        try:
            run_id = first.stdout.readline().strip()
            assert run_id, stderr.read_text()[-3000:]
            wait_for(lambda: log.exists() and "join" in log.read_text(), first, "node join started", stderr)
            kill(first)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
        asked_before = [r.body["messages"][-1]["content"].split("]")[0] + "]" for r in openai_server.requests_to(CHAT)]
        assert sorted(asked_before) == ["[left]", "[plan]", "[right]"]

        gate.touch()
        second = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(RETRY_GRAPH), run_id],
            env=env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert second.returncode == 0, second.stderr[-3000:]
        status, result = second.stdout.strip().splitlines()[0], json.loads(second.stdout.strip().splitlines()[-1])
    assert status == "RUNNING"  # nobody was left to say otherwise
    assert result["answer"] == "Echo: [join] Echo: [left] Echo: [plan] resume + Echo: [right] Echo: [plan] resume"
    runs = [line.split() for line in log.read_text().splitlines()]
    assert sorted(node for node, _ in runs) == ["join", "join", "left", "plan", "right"]  # only join ran twice
    assert {pid for node, pid in runs if node != "join"} == {str(first.pid)}
    asked = [r.body["messages"][-1]["content"].split("]")[0] + "]" for r in openai_server.requests_to(CHAT)]
    assert sorted(asked) == ["[join]", "[left]", "[plan]", "[right]"]  # each node's request once
    report(
        component="workflow graph (4 nodes, chat)",
        path="subprocess, prefect server",
        fault="SIGKILL in node join (3/4 done)",
        attempts="run + retry",
        outcome="ok; plan/left/right read back, only join re-ran",
        vectors="-",
        seconds=f"{time.monotonic() - started:.1f}",
    )
