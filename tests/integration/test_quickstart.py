"""flows/quickstart.py, run as the README says, against a server that already holds "production":
it runs quietly and touches nothing but its own namespace (blocks, store file, flow names, artifacts).

The quickstart runs in its own process (offline: no OPENAI_/PINECONE_/BELUGA_ variable) on this
session's Prefect API, where the default blocks (`beluga-chat`, `beluga-embedder`,
`beluga-store`) already point at a production store file holding a document.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
from prefect.settings import PREFECT_API_URL

from prefect_beluga import embeddings
from prefect_beluga.blocks import ChatModelBlock, EmbeddedVectorStoreBlock, EmbedderBlock, load_vector_store_block
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores import InMemoryVectorStore

QUICKSTART = Path(__file__).resolve().parents[2] / "flows" / "quickstart.py"
LOUD = re.compile(r"^\S+ \| (WARNING|ERROR|CRITICAL) +\|", re.MULTILINE)


async def test_the_quickstart_runs_quietly_in_a_namespace_of_its_own(tmp_path):
    production = tmp_path / "production-store.npz"
    store = InMemoryVectorStore()
    store.add_documents([Document(page_content="Production knowledge.", metadata={"source": "prod.md"})],
                        embeddings.HashingEmbedder())
    store.save(production)
    before = production.read_bytes()
    await ChatModelBlock(provider="offline").asave("beluga-chat", overwrite=True)
    await EmbedderBlock(provider="hashing").asave("beluga-embedder", overwrite=True)
    await EmbeddedVectorStoreBlock(path=str(production)).asave("beluga-store", overwrite=True)
    async with get_client() as client:
        artifacts_before = {a.key for a in await client.read_artifacts() if a.key}
    started = datetime.now(timezone.utc)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PINECONE_", "BELUGA_"))}
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), PREFECT_HOME=str(tmp_path / "home"),
               PREFECT_LOGGING_LEVEL="INFO")
    done = subprocess.run([sys.executable, str(QUICKSTART)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    loud = [line for line in done.stderr.splitlines() if LOUD.match(line)]
    assert not loud, "\n".join(loud)
    assert "Running hook" not in done.stderr  # the cache-hit hook's own lines are not shown
    assert "3 of 3 answers (cached)" in done.stderr + done.stdout

    # Production is as it was: the store file, and the default blocks pointing at it.
    assert production.read_bytes() == before
    assert (await load_vector_store_block("beluga-store")).path == str(production)
    own = await load_vector_store_block("quickstart-store")
    assert Path(own.path).name.startswith("quickstart-store-") and Path(own.path) != production
    assert len(own.get_store()) > 0  # the quickstart ingested into its own store

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started))
        )
        names = {(await client.read_flow(run.flow_id)).name for run in runs}
        artifacts = {a.key for a in await client.read_artifacts() if a.key} - artifacts_before
    assert {"quickstart", "quickstart-rag-ingest", "quickstart-rag-answer", "quickstart-agent-answer",
            "quickstart-tutorial-graph"} <= names
    assert all(name == "quickstart" or name.startswith("quickstart-") for name in names), names
    assert artifacts and all(key.startswith("quickstart-") for key in artifacts), artifacts


FLOWS = QUICKSTART.parent
EACH_FLOW = f"""
import asyncio, sys
sys.path.insert(0, {str(FLOWS)!r})
from prefect_beluga.blocks import save_default_blocks
for line in save_default_blocks().values():  # what `python blocks/create_blocks.py` does
    print(line)
from agent import agent_answer
from rag_answer import rag_answer
from rag_ingest import rag_ingest
from summarize import summarize

async def main():
    print("ingest:", await rag_ingest())
    print("answer:", (await rag_answer("How are Prefect tasks retried?"))["sources"])
    print("agent:", (await agent_answer("How are Prefect tasks retried?"))["searches"])
    print("summary:", len((await summarize("retries"))["summaries"]))

asyncio.run(main())
"""


def test_each_deployable_flow_runs_quietly_with_its_defaults(tmp_path):
    """rag-ingest, rag-answer, agent-answer and summarize, as their scripts run them (one process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PINECONE_", "BELUGA_"))}
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), PREFECT_HOME=str(tmp_path / "home"),
               PREFECT_LOGGING_LEVEL="INFO")
    done = subprocess.run([sys.executable, "-c", EACH_FLOW], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "summary: " in done.stdout and "summary: 0" not in done.stdout, done.stdout[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    loud = [line for line in done.stderr.splitlines() if LOUD.match(line)]
    assert not loud, "\n".join(loud)
