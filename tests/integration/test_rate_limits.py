"""Provider rate limits: a Prefect global concurrency limit with slot decay, taken per HTTP request.

The cross-process test runs two processes (a chat model in one, an embedder in the other) on a
real `prefect server` sharing one limit, and counts the requests where they land: at the
loopback OpenAI server.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from prefect.client.orchestration import get_client

from prefect_beluga import Chain, ValidationError, llms
from prefect_beluga.embeddings import OpenAIEmbedder
from prefect_beluga.limits import aensure_rate_limit, ensure_rate_limit
from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.prefect_server import PrefectServer

PER_SECOND = 4
BURST = 2

WORKER = """
import asyncio, sys
from prefect_beluga import llms
from prefect_beluga.embeddings import OpenAIEmbedder

kind, base_url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    if kind == "chat":
        llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key="sk-test",
                                               base_url=base_url, rate_limit="openai-test"))
        await asyncio.gather(*(llm.agenerate(f"hello {i}") for i in range(count)))
    else:
        embedder = OpenAIEmbedder(api_key="sk-test", base_url=base_url, rate_limit="openai-test")
        await asyncio.gather(*(embedder.aembed_query(f"text {i}") for i in range(count)))
    print("done")

asyncio.run(main())
"""


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    most = 0
    for i, start in enumerate(times):
        most = max(most, sum(1 for t in times[i:] if t - start < 1.0))
    return most


def test_two_processes_sharing_one_limit_never_exceed_it(prefect_server: PrefectServer) -> None:
    with prefect_server.settings():
        ensure_rate_limit("openai-test", per_second=PER_SECOND, burst=BURST)
    with OpenAIServer(api_key="sk-test") as server:
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, kind, server.base_url, "12"],
                env=prefect_server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for kind in ("chat", "embed")
        ]
        for worker in workers:
            out, err = worker.communicate(timeout=180)
            assert worker.returncode == 0 and "done" in out, err[-3000:]
        times = [r.at for r in server.requests]
    assert len(times) == 24
    # Without the limit the 24 requests land within a fraction of a second.
    assert most_in_one_second(times) <= PER_SECOND + BURST
    assert max(times) - min(times) >= (24 - PER_SECOND - BURST) / PER_SECOND * 0.8


async def test_ensure_rate_limit_creates_then_updates_a_decaying_limit() -> None:
    await aensure_rate_limit("beluga-update", per_second=2.5)
    async with get_client() as client:
        created = await client.read_global_concurrency_limit_by_name("beluga-update")
    assert (created.limit, created.slot_decay_per_second, created.active) == (3, 2.5, True)
    await aensure_rate_limit("beluga-update", per_second=10, burst=4)
    async with get_client() as client:
        updated = await client.read_global_concurrency_limit_by_name("beluga-update")
    assert (updated.limit, updated.slot_decay_per_second) == (4, 10.0)
    assert updated.id == created.id


@pytest.mark.parametrize(("per_second", "burst", "message"), [
    (0, None, "per_second must be > 0"), (1, 0, "burst must be an int >= 1"),
])
def test_bad_rate_limit_arguments_are_clear_errors(per_second: float, burst: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ensure_rate_limit("x", per_second=per_second, burst=burst)


async def test_a_name_without_a_limit_is_a_clear_error_naming_ensure_rate_limit(
    openai_server: OpenAIServer,
) -> None:
    embedder = OpenAIEmbedder(api_key="sk-test", base_url=openai_server.base_url,
                              rate_limit="no-such-limit")
    with pytest.raises(ValidationError, match=r"ensure_rate_limit\('no-such-limit'"):
        await embedder.aembed_query("hello")
    assert openai_server.requests == []  # nothing was sent


async def test_every_retry_takes_a_slot(openai_server: OpenAIServer) -> None:
    """A step retried by Prefect sends its request again, through the limit again."""
    from prefect_beluga.core import _limits as limits

    taken: list[str] = []
    prefect_limiter = limits.get_limiter()

    class Counting:
        async def acquire(self, name: str) -> None:
            taken.append(name)
            await prefect_limiter.acquire(name)

    await aensure_rate_limit("retried", per_second=100)
    previous = limits.set_limiter(Counting())
    try:
        openai_server.fail_next(503, times=2)
        llm = llms.OpenAIChatModel(llms.Config(model_name="gpt-4o-mini", api_key="sk-test",
                                               base_url=openai_server.base_url, rate_limit="retried"))
        result = await Chain([llm], name="retried", retries=2).ainvoke({"input": "hi"})
    finally:
        limits.set_limiter(previous)
    assert result["output"] == "Echo: hi"
    assert taken == ["retried"] * 3 and len(openai_server.requests) == 3


def test_rate_limit_names_are_checked() -> None:
    with pytest.raises(ValidationError, match="rate_limit"):
        OpenAIEmbedder(api_key="sk-test", rate_limit="")
    with pytest.raises(ValidationError, match="rate_limit"):
        llms.Config(rate_limit="")


def test_rate_limit_travels_through_the_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_beluga.blocks import ChatModelBlock, EmbedderBlock

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    chat = ChatModelBlock(provider="openai", rate_limit="from-block").get_chat_model()
    assert chat.config.rate_limit == "from-block"
    assert chat._clients.rate_limit == "from-block"
    embedder = EmbedderBlock(provider="openai", rate_limit="from-block").get_embedder()
    assert embedder.rate_limit == "from-block"


async def delete_default_blocks() -> None:
    """No documents under the default block names (other modules use them too)."""
    names = {"beluga-openai", "beluga-pinecone", "beluga-chat", "beluga-embedder", "beluga-store"}
    async with get_client() as client:
        for document in await client.read_block_documents(include_secrets=False):
            if document.name in names:
                await client.delete_block_document(document.id)


async def test_saving_the_default_blocks_can_set_the_openai_rate_limit(tmp_path: Any) -> None:
    from prefect_beluga.blocks import ChatModelBlock, EmbedderBlock, asave_default_blocks

    env = {"OPENAI_API_KEY": "sk-test", "BELUGA_OPENAI_RATE_PER_SECOND": "7.5",
           "BELUGA_STORE_PATH": str(tmp_path / "store.npz")}
    await delete_default_blocks()
    try:
        report = await asave_default_blocks(env)
        assert "7.5 requests per second" in report["rate limit openai"]
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name("openai")
        assert (limit.limit, limit.slot_decay_per_second) == (8, 7.5)
        assert (await ChatModelBlock.aload("beluga-chat")).rate_limit == "openai"
        assert (await EmbedderBlock.aload("beluga-embedder")).rate_limit == "openai"
        with pytest.raises(ValidationError, match="BELUGA_OPENAI_RATE_PER_SECOND must be a number"):
            await asave_default_blocks({**env, "BELUGA_OPENAI_RATE_PER_SECOND": "fast"})
    finally:
        await delete_default_blocks()
