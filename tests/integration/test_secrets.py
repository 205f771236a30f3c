"""No API key ever leaves its SecretStr: a leak scan with canary keys.

Every kind of run — the deployable flows `rag-ingest` and `rag-answer` on blocks, a Chain and a
Graph with an OpenAI chat model, a Workflow — runs with distinctive fake keys (an OpenAI one and
a Pinecone one) against the loopback servers, once succeeding and once failing (401 from a
wrong key, 500s, a server that echoes the key in its error body), with the loggers of Prefect,
this package and the SDKs (openai, httpx, httpcore, pinecone, urllib3) at DEBUG and sent to the
Prefect API. Then every place a key could end up is searched for the canary, raw and
base64-encoded:

- the Prefect database: the raw bytes of the SQLite file and its -wal/-shm files;
- through the API: flow and task runs (parameters, task inputs, states and their messages),
  logs, artifacts, block documents (read without secrets), variables;
- persisted results: every file under PREFECT_LOCAL_STORAGE_PATH and PREFECT_HOME (results are
  base64 pickles inside JSON records: decoded and searched too), and the test's own files
  (conversation memory);
- what reached the caller: str/repr/notes of every raised exception along its
  `__cause__`/`__context__` chain, and the attributes of each (bodies, requests);
- captured stdout/stderr (fd level) and every log record (caplog).

Block documents must hold the key (encrypted): the raw database must not hold it in cleartext.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, get_current_settings
from pydantic import SecretStr
from rag_answer import rag_answer
from rag_ingest import rag_ingest

from prefect_beluga import Chain, Graph, Orchestrator, WorkflowFailed, llms
from prefect_beluga.blocks import (
    ChatModelBlock,
    EmbedderBlock,
    OpenAICredentials,
    PineconeCredentials,
    PineconeVectorStoreBlock,
)
from prefect_beluga.testing import OpenAIServer, PineconeServer
from prefect_beluga.testing.helpers import base64_forms, write_docs
from prefect_beluga.testing.prefect_server import PrefectServer

TAG = uuid.uuid4().hex
OPENAI_KEY = f"sk-beluga-LEAKCANARY-{TAG}"
PINECONE_KEY = f"pcsk_beluga-LEAKCANARY-{uuid.uuid4().hex}"
DIMENSION = 16
DOCS = {
    "prefect.md": "# Prefect\n\nPrefect runs flows made of tasks. A task can be retried by its retry policy.\n",
    "ml.md": "# Machine learning\n\nMachine learning learns patterns from data. Models are trained on examples.\n",
}
SDK_LOGGERS = ("prefect_beluga", "openai", "httpx", "httpcore", "pinecone", "urllib3")

# Some SDK records are logged where no flow run is in context (e.g. in the SDKs' own threads):
# Prefect's API handler cannot send those, and says so with this warning. What does reach the
# API is read back and checked.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Logger '.*' attempted to send logs to the API without a flow run id:UserWarning"
)


# -- what to look for --------------------------------------------------------------------------


def needles_for(*keys: str) -> list[bytes]:
    needles = []
    for key in keys:
        raw = key.encode()
        needles += [raw, raw.split(b"LEAKCANARY-")[1], *base64_forms(raw)]
    return needles


NEEDLES = needles_for(OPENAI_KEY, PINECONE_KEY)


def hits_in(data: bytes | str, where: str, needles: list[bytes] = NEEDLES) -> list[str]:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    found = [f"{where}: {needle[:24]!r}..." for needle in needles if needle in data]
    # Results are base64 pickles inside JSON records: search the decoded payloads too.
    if not found and data[:1] == b"{":
        try:
            record = json.loads(data)
        except ValueError:
            return found
        if isinstance(record, dict) and isinstance(record.get("result"), str):
            try:
                decoded = base64.b64decode(record["result"], validate=False)
            except ValueError:
                decoded = b""
            found += [f"{where} (decoded result): {n[:24]!r}..." for n in needles if n in decoded]
    return found


def exception_text(exc: BaseException) -> str:
    """Everything an exception shows or carries, along its cause/context chain."""
    parts: list[str] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [type(current).__name__, str(current), repr(current), repr(current.args)]
        parts += [str(n) for n in getattr(current, "__notes__", None) or []]
        for name, value in vars(current).items():
            parts.append(f"{name}={value!r}")
            if name in ("request", "response") and value is not None:
                headers = getattr(value, "headers", None)
                request = getattr(value, "request", None)
                parts.append(repr(list(headers.raw)) if hasattr(headers, "raw") else repr(headers))
                if request is not None and hasattr(request.headers, "raw"):
                    parts.append(repr(list(request.headers.raw)))
        parts.append(repr(getattr(current, "body", None)))
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return "\n".join(parts)


def assert_no_leak_in(exc: BaseException, needles: list[bytes] = NEEDLES) -> None:
    assert hits_in(exception_text(exc), f"exception {type(exc).__name__}", needles) == []


def database_files(url: str | None = None) -> list[Path]:
    """The SQLite database files of `url` (default: this process's own server database)."""
    url = url or get_current_settings().server.database.connection_url
    url = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
    assert url.startswith("sqlite"), url
    db = Path(url.split("///", 1)[1])
    assert db.is_file(), db
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


def scan_files(*roots: Path, needles: list[bytes] = NEEDLES) -> tuple[list[str], int]:
    hits, count = [], 0
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        for path in files:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            count += 1
            hits += hits_in(data, str(path), needles)
    return hits, count


async def read_everything_through_the_api() -> dict[str, str]:
    """Flow runs, task runs, logs, artifacts, block documents and variables, as JSON text."""
    await APILogHandler.aflush()
    out: dict[str, str] = {}
    async with get_client() as client:
        async def paged(read: Any, **kwargs: Any) -> list[Any]:
            items, offset = [], 0
            while True:
                page = await read(limit=200, offset=offset, **kwargs)
                items += page
                if len(page) < 200:
                    return items
                offset += 200

        flow_runs = await paged(client.read_flow_runs)
        out["flow runs"] = json.dumps([r.model_dump(mode="json") for r in flow_runs])
        out["task runs"] = json.dumps([r.model_dump(mode="json") for r in await paged(client.read_task_runs)])
        out["logs"] = json.dumps([r.model_dump(mode="json") for r in await paged(client.read_logs)])
        out["artifacts"] = json.dumps([r.model_dump(mode="json") for r in await paged(client.read_artifacts)])
        documents = await client.read_block_documents(include_secrets=False)
        out["block documents"] = json.dumps([d.model_dump(mode="json") for d in documents])
        out["variables"] = json.dumps([v.model_dump(mode="json") for v in await client.read_variables()])
        out["_counts"] = json.dumps({"flow runs": len(flow_runs), "logs": len(json.loads(out["logs"]))})
    return out


async def assert_nothing_leaked(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
                                *exceptions: BaseException, extra: tuple[Path, ...] = (),
                                needles: list[bytes] = NEEDLES, db: list[Path] | None = None) -> dict[str, int]:
    """Search every place named in the module docstring; return how much was searched."""
    for exc in exceptions:
        assert_no_leak_in(exc, needles)
    api = await read_everything_through_the_api()
    hits = [h for name, text in api.items() for h in hits_in(text, name, needles)]
    db_hits, db_files = scan_files(*(database_files() if db is None else db), needles=needles)
    store_hits, stored = scan_files(Path(PREFECT_LOCAL_STORAGE_PATH.value()), Path(PREFECT_HOME.value()), *extra,
                                    needles=needles)
    out, err = capfd.readouterr()
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    hits += db_hits + store_hits + hits_in(out, "stdout", needles) + hits_in(err, "stderr", needles)
    hits += hits_in(logged, "log records", needles)
    assert hits == []
    counts = json.loads(api["_counts"])
    return {"db files": db_files, "stored files": stored, "log records": len(caplog.records), **counts}


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def debug_logging_to_the_api(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Prefect, this package and the SDKs at DEBUG, their records sent to the Prefect API too."""
    handler = APILogHandler(level=logging.DEBUG)
    saved = []
    for name in ("prefect", *SDK_LOGGERS):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        if name != "prefect":
            logger.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
            logger.removeHandler(handler)


@pytest.fixture
def openai_canary() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=OPENAI_KEY, dimension=DIMENSION) as server:
        yield server


@pytest.fixture
def pinecone_canary() -> Iterator[PineconeServer]:
    with PineconeServer(api_key=PINECONE_KEY, dimension=DIMENSION) as server:
        yield server


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path, DOCS)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def save_blocks(openai_url: str, pinecone_url: str) -> dict[str, str]:
    credentials = OpenAICredentials(api_key=SecretStr(OPENAI_KEY), base_url=openai_url)
    names = {"embedder_block": unique("emb"), "vector_store_block": unique("pc"), "chat_model_block": unique("chat")}
    await credentials.asave(unique("openai"))
    await EmbedderBlock(provider="openai", dimension=DIMENSION, credentials=credentials).asave(names["embedder_block"])
    chat_block = ChatModelBlock(provider="openai", model_name="gpt-4o-mini", credentials=credentials)
    await chat_block.asave(names["chat_model_block"])
    pinecone = PineconeCredentials(api_key=SecretStr(PINECONE_KEY))
    await pinecone.asave(unique("pinecone"))
    await PineconeVectorStoreBlock(host=pinecone_url, namespace="secrets", credentials=pinecone).asave(
        names["vector_store_block"]
    )
    return names


def chat_model(base_url: str) -> llms.ChatModel:
    config = llms.Config(provider="openai", model_name="gpt-4o-mini", api_key=OPENAI_KEY, base_url=base_url)
    return llms.Factory().create_provider("openai", config)


def echo_body(key: str) -> dict[str, Any]:
    """A server error that quotes the key back (some proxies and gateways do)."""
    return {"error": {"message": f"upstream rejected key {key}", "type": "server_error", "param": None, "code": None}}


# -- the flows ---------------------------------------------------------------------------------


async def test_flows_succeed_without_leaking(docs, tmp_path, openai_canary, pinecone_canary, capfd, caplog):
    names = await save_blocks(openai_canary.base_url, pinecone_canary.url)
    ingest = {k: names[k] for k in ("embedder_block", "vector_store_block")}
    report = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0, **ingest)
    assert report["written"] == pinecone_canary.vector_count("secrets") > 0
    answer = await rag_answer(
        "What is machine learning?", k=2, session_id="alice", memory_dir=str(tmp_path / "memory"), **names
    )
    assert answer["output"] and answer["usage"]["total_tokens"] > 0
    # The keys did reach the servers (so they were really used), and nothing else did.
    assert {r.bearer for r in openai_canary.requests} == {OPENAI_KEY}
    assert {r.headers.get("api-key") for r in pinecone_canary.requests} == {PINECONE_KEY}

    searched = await assert_nothing_leaked(capfd, caplog, extra=(tmp_path,))
    assert searched["db files"] >= 1 and searched["flow runs"] >= 2 and searched["logs"] > 0


async def test_flows_on_a_server_with_basic_auth_leak_neither_keys_nor_the_auth_string(
    docs, tmp_path, openai_canary, pinecone_canary, capfd, caplog
):
    """The same scan through a `prefect server` with basic auth: the auth string is a secret too."""
    auth = f"beluga:LEAKCANARY-{uuid.uuid4().hex}"
    needles = NEEDLES + needles_for(auth)
    with PrefectServer(auth_string=auth) as server, server.settings():
        names = await save_blocks(openai_canary.base_url, pinecone_canary.url)
        ingest = {k: names[k] for k in ("embedder_block", "vector_store_block")}
        report = await rag_ingest(str(docs), chunk_size=20, chunk_overlap=0, **ingest)
        answer = await rag_answer(
            "What is machine learning?", k=2, session_id="bob", memory_dir=str(tmp_path / "memory"), **names
        )
        assert report["written"] > 0 and answer["output"]
        db = database_files(f"sqlite+aiosqlite:///{server.home / 'server-home' / 'prefect.db'}")
        # Known, outside this package: the `websockets` library logs, at DEBUG only, the headers and
        # frames of Prefect's events connection, which carry the auth string (docs/operations.md
        # says to keep `websockets` above DEBUG). Those records are set aside, after checking that
        # none is above DEBUG; every other record is scanned.
        websockets = [r for r in caplog.records if r.name.startswith("websockets")]
        assert all(r.levelno <= logging.DEBUG for r in websockets)
        caplog.handler.records[:] = [r for r in caplog.records if not r.name.startswith("websockets")]
        searched = await assert_nothing_leaked(capfd, caplog, extra=(tmp_path, server.home), needles=needles, db=db)
        assert searched["flow runs"] >= 2 and searched["logs"] > 0
        server_log = server.log()
    assert server_log == "" or hits_in(server_log, "server log", needles) == []


async def test_the_raw_database_holds_block_keys_encrypted_only(openai_canary, pinecone_canary, capfd, caplog):
    names = await save_blocks(openai_canary.base_url, pinecone_canary.url)
    loaded = await ChatModelBlock.aload(names["chat_model_block"])
    assert loaded.credentials.api_key.get_secret_value() == OPENAI_KEY  # it is stored...
    assert hits_in(b"".join(p.read_bytes() for p in database_files()), "database") == []  # ...not in clear
    await assert_nothing_leaked(capfd, caplog)


async def test_flows_failing_on_wrong_keys_and_server_errors_leak_nothing(docs, tmp_path, capfd, caplog):
    # Servers that expect other keys: the canaries are refused with 401 (OpenAI quotes the
    # sent key masked in its message, as the real API does).
    with (
        OpenAIServer(api_key="sk-the-right-one", dimension=DIMENSION) as openai_server,
        PineconeServer(api_key=PINECONE_KEY, dimension=DIMENSION) as pinecone_server,
    ):
        names = await save_blocks(openai_server.base_url, pinecone_server.url)
        ingest = {k: names[k] for k in ("embedder_block", "vector_store_block")}
        with pytest.raises(Exception, match="Incorrect API key") as embed_401:  # OpenAI refuses
            await rag_ingest(str(docs), **ingest)
        openai_server.api_key, pinecone_server.api_key = OPENAI_KEY, "pc-the-right-one"
        with pytest.raises(Exception, match="Invalid API Key") as fetch_401:  # Pinecone refuses
            await rag_ingest(str(docs), **ingest)
        with pytest.raises(Exception, match="Invalid API Key") as query_401:
            await rag_answer("What is ML?", **names)
        pinecone_server.api_key = PINECONE_KEY
        await rag_ingest(str(docs), chunk_size=40, chunk_overlap=0, **ingest)
        openai_server.fail_next(401, path="/v1/chat/completions")
        with pytest.raises(Exception, match="401") as chat_401:
            await rag_answer("What is ML?", **names)
        # 500s whose bodies quote the keys back, until the flow's retries run out.
        openai_server.fail_next(500, times=3, body=echo_body(OPENAI_KEY), path="/v1/chat/completions")
        with pytest.raises(Exception, match="upstream rejected key") as chat_500:
            await rag_answer("What is ML?", session_id="bob", memory_dir=str(tmp_path / "memory"), **names)
        pinecone_server.fail_next(500, times=3, path="/query")
        with pytest.raises(Exception, match="500") as query_500:
            await rag_answer("What is ML?", **names)
    raised = [embed_401.value, fetch_401.value, query_401.value, chat_401.value, chat_500.value, query_500.value]
    await assert_nothing_leaked(capfd, caplog, *raised, extra=(tmp_path,))


# -- chains, graphs and workflows ------------------------------------------------------------


def build_graph(llm: llms.ChatModel) -> Graph:
    graph = Graph(name="secret-graph")
    graph.add_node("prepare", lambda state: {"input": f"Answer briefly: {state['input']}"})
    graph.add_node("answer", llm)
    graph.add_edge("prepare", "answer")
    graph.set_entry_point("prepare").set_finish_point("answer")
    return graph


async def test_chain_and_graph_with_an_openai_model_leak_nothing(openai_canary, capfd, caplog):
    llm = chat_model(openai_canary.base_url)
    chain = Chain([lambda s: {"input": s["input"].strip()}, llm], name="secret-chain", retries=1)
    assert (await chain.ainvoke("  What is Prefect?  "))["output"]
    assert (await build_graph(llm).ainvoke({"input": "What is Prefect?"}))["output"]

    openai_canary.fail_next(500, times=2, body=echo_body(OPENAI_KEY))
    with pytest.raises(Exception) as chain_500:
        await chain.ainvoke("What is Prefect?")
    openai_canary.fail_next(401)
    with pytest.raises(Exception) as graph_401:
        await build_graph(llm).ainvoke({"input": "What is Prefect?"})
    openai_canary.fail_next(400, body=echo_body(OPENAI_KEY))
    with pytest.raises(Exception) as stream_400:
        async for _ in llm.astream("What is Prefect?"):
            pass
    assert len(openai_canary.requests) == 2 + 2 + 1 + 1
    await assert_nothing_leaked(capfd, caplog, chain_500.value, graph_401.value, stream_400.value)


def test_workflow_results_and_failures_leak_nothing(openai_canary, capfd, caplog):
    llm = chat_model(openai_canary.base_url)
    workflow = Orchestrator().create_workflow(Chain([llm], name="secret-wf-chain"), workflow_id=unique("secret-wf"))
    workflow_id, run_id = workflow.execute({"input": "What is Prefect?"})
    assert workflow.get_result(workflow_id, run_id, timeout=120)["output"]

    openai_canary.fail_next(500, body=echo_body(OPENAI_KEY))
    workflow_id, failed_id = workflow.execute({"input": "What is Prefect now?"})
    with pytest.raises(WorkflowFailed) as failed:
        workflow.get_result(workflow_id, failed_id, timeout=120)

    import asyncio

    asyncio.run(assert_nothing_leaked(capfd, caplog, failed.value))


async def test_a_pinecone_error_quoting_the_key_back_is_scrubbed(openai_canary, capfd, caplog):
    # Its own canary, so that a leak here cannot fail the other tests' scans of the shared database.
    key = f"pcsk_beluga-LEAKCANARY-{uuid.uuid4().hex}"
    with PineconeServer(api_key=key, dimension=DIMENSION) as pinecone_server:
        credentials = OpenAICredentials(api_key=SecretStr(OPENAI_KEY), base_url=openai_canary.base_url)
        names = {
            "embedder_block": unique("emb"),
            "vector_store_block": unique("pc"),
            "chat_model_block": unique("chat"),
        }
        await EmbedderBlock(provider="openai", dimension=DIMENSION, credentials=credentials).asave(
            names["embedder_block"]
        )
        await ChatModelBlock(provider="openai", credentials=credentials).asave(names["chat_model_block"])
        await PineconeVectorStoreBlock(
            host=pinecone_server.url, credentials=PineconeCredentials(api_key=SecretStr(key))
        ).asave(names["vector_store_block"])
        pinecone_server.fail_next(500, times=3, body={"code": 13, "message": f"bad key {key}"}, path="/query")
        with pytest.raises(Exception, match="bad key") as query_500:
            await rag_answer("What is ML?", **names)
    await assert_nothing_leaked(capfd, caplog, query_500.value, needles=needles_for(key))


def test_a_scrubbed_sdk_error_pickles_without_the_key(openai_canary):
    """What Prefect persists for a failed task: the pickled exception, with its httpx response."""
    import pickle

    import cloudpickle

    openai_canary.fail_next(500, body=echo_body(OPENAI_KEY))
    with pytest.raises(Exception) as raised:
        chat_model(openai_canary.base_url).generate("What is Prefect?")
    assert raised.value.response.content  # the raw body travels with the exception...
    for dumps in (pickle.dumps, cloudpickle.dumps):
        assert hits_in(dumps(raised.value), dumps.__module__) == []  # ...scrubbed
    assert_no_leak_in(raised.value)


async def test_the_durable_records_of_a_plain_flow_run_with_an_agent_and_a_chain_leak_nothing(
        openai_canary, capfd, caplog):
    """A user's `@flow(retries=1)`: its chain steps, the agent's model turns and tool call are
    persisted (docs/durability.md) and read back by the retry; no record holds the key."""
    from prefect import flow
    from prefect.context import FlowRunContext

    from prefect_beluga.agents import Agent
    from prefect_beluga.tools import tool

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up."""
        openai_canary.fail_next(500, body=echo_body(OPENAI_KEY))  # the turn after it fails once
        return f"{topic}: durable-canary-answer"

    openai_canary.reply_with({"tool_calls": [{"name": "lookup", "arguments": {"topic": "prefect"}}]},
                             "Prefect runs flows.")
    agent = Agent(chat_model(openai_canary.base_url), tools=[lookup], name="secret-durable-agent")
    chain = Chain([lambda s: {"input": s["input"].strip()}, agent], name="secret-durable-chain")
    run_ids: list[str] = []

    @flow(retries=1, persist_result=False)
    async def job() -> str:
        run_ids.append(str(FlowRunContext.get().flow_run.id))
        return (await chain.ainvoke("  What is Prefect?  "))["output"]

    assert await job() == "Prefect runs flows."
    assert len(run_ids) == 2 and len(openai_canary.chat_requests()) == 3  # turn 1 read back by the retry
    records = list(Path(PREFECT_LOCAL_STORAGE_PATH.value()).glob(f"beluga-run-{run_ids[0]}-*"))
    assert len(records) >= 3, records  # the first step, the model turn, the tool call (at least)
    # the scan reads these records' decoded payloads: the tool's answer is found in them
    marker = [b"durable-canary-answer"]
    assert any(hits_in(p.read_bytes(), p.name, marker) for p in records)
    await assert_nothing_leaked(capfd, caplog)
