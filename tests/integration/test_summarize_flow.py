"""flows/summarize.py: retrieve -> Map summarize (a task run per chunk) -> combine, offline."""

from __future__ import annotations

import uuid
from pathlib import Path

from rag_ingest import rag_ingest
from summarize import summarize

from prefect_beluga.blocks import ChatModelBlock, EmbeddedVectorStoreBlock, EmbedderBlock
from prefect_beluga.testing.helpers import read_task_runs, write_docs

DOCS = {
    "prefect.md": "# Prefect\n\nPrefect runs flows made of tasks. A task can be retried by its retry policy.\n",
    "ml.md": "# Machine learning\n\nMachine learning learns patterns from data. Models are trained on examples.\n",
}


async def test_summarize_maps_one_task_run_per_chunk(tmp_path: Path) -> None:
    kinds = ("embedder_block", "vector_store_block", "chat_model_block")
    names = {k: f"{k.split('_')[0]}-{uuid.uuid4().hex[:8]}" for k in kinds}
    await EmbedderBlock(provider="hashing").asave(names["embedder_block"])
    await EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz")).asave(names["vector_store_block"])
    await ChatModelBlock(provider="offline").asave(names["chat_model_block"])
    docs = write_docs(tmp_path / "docs", DOCS)
    ingested = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0,
                                embedder_block=names["embedder_block"],
                                vector_store_block=names["vector_store_block"])
    assert ingested["chunks"] >= 3

    state = await summarize("retries", k=3, max_concurrency=2, **names, return_state=True)
    result = await state.result()
    assert len(result["summaries"]) == 3 and len(result["sources"]) == 3
    assert all(s["summary"] and s["source"] for s in result["summaries"])
    assert result["output"]
    runs = await read_task_runs(state.state_details.flow_run_id, expected=5)
    names_seen = sorted(r.name for r in runs)
    assert names_seen == sorted(["retrieve", "summarize[0]", "summarize[1]", "summarize[2]", "combine"])
