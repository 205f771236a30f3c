"""The bad-input catalogue: one row per mistake a user can make, the error it gets, and what the
message must name.

Every row is `(id, call, expected exception type, regex the message must match)`. `call` takes
no argument (or the `ctx` fixture for rows that need saved blocks or a store) and may return an
awaitable. Most rows also appear in the module that tests their component; this file is the one
place that proves the list.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rag_answer import rag_answer
from rag_ingest import rag_ingest

from prefect_beluga import END, Chain, Graph, Orchestrator, llms, memory
from prefect_beluga.blocks import ChatModelBlock, EmbeddedVectorStoreBlock, EmbedderBlock
from prefect_beluga.core.errors import (
    GraphRecursionError,
    GraphValidationError,
    StepOutputError,
    ValidationError,
)
from prefect_beluga.embeddings import HashingEmbedder, OpenAIEmbedder
from prefect_beluga.rag import RetrievalStep
from prefect_beluga.schema import Document
from prefect_beluga.vectorstores import InMemoryVectorStore, PineconeVectorStore


def ok(state: dict) -> dict:
    return {"output": "ok"}


def graph(*nodes: str, edges: tuple[tuple[str, str], ...] = (), entry: Any = None, finish: Any = None,
          **options: Any) -> Graph:
    g = Graph(name="bad", **options)
    for name in nodes:
        g.add_node(name, ok)
    for source, target in edges:
        g.add_edge(source, target)
    if entry is not None:
        g.set_entry_point(entry)
    if finish is not None:
        g.set_finish_point(finish)
    return g


def routed(router: Callable[[dict], Any], path_map: Any = None, **options: Any) -> Graph:
    g = graph("a", "b", entry="a", finish="b", **options)
    g.add_conditional_edges("a", router, path_map)
    return g


def looping() -> Graph:
    """draft -> review -> draft ... : the router never says END."""
    g = Graph(name="loop", recursion_limit=3)
    g.add_node("draft", ok).add_node("review", ok).add_edge("draft", "review")
    g.add_conditional_edges("review", lambda s: "again", {"again": "draft", "done": END})
    return g.set_entry_point("draft").set_finish_point("review")


def store_with_docs(dimension: int = 64) -> InMemoryVectorStore:
    store = InMemoryVectorStore()
    store.add_documents([Document(page_content="Prefect retries tasks.", metadata={"source": "a.md"})],
                        HashingEmbedder(dimension))
    return store


def offline_llm() -> llms.ChatModel:
    return llms.Factory().create_provider("offline", llms.Config(provider="offline"))


def openai_embedder() -> OpenAIEmbedder:
    return OpenAIEmbedder(api_key="sk-test", base_url="http://127.0.0.1:9/v1")


def recovered_without_output() -> Chain:
    def boom(state: dict) -> dict:
        raise RuntimeError("boom")

    return Chain([boom], name="recovering", error_handler=lambda exc: {"answer": "sorry"},
                 memory=memory.new_memory(memory.MemoryType.BUFFER))


def workflow() -> Any:
    return Orchestrator().create_workflow(ok, workflow_id="bad-input-wf")


# (id, call, expected exception type, regex the message must match)
CATALOGUE: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    # chains
    ("chain-steps-not-a-list", lambda: Chain("step"), ValidationError, r"chain 'chain': steps must be a list.*got str"),
    ("chain-empty", lambda: Chain([], name="c"), ValidationError, r"chain 'c' has no steps"),
    (
        "chain-step-not-callable",
        lambda: Chain([ok, 42], name="c"),
        ValidationError,
        r"step \(2 of 2\) of chain 'c' must be a Runnable or a callable.*int",
    ),
    (
        "chain-input-wrong-type",
        lambda: Chain([ok], name="c").ainvoke(42),
        ValidationError,
        r"chain 'c' expects a dict.*got int",
    ),
    (
        "chain-step-returns-non-dict",
        lambda: Chain([ok, lambda s: "text"], name="c").ainvoke("x"),
        StepOutputError,
        r"step 'lambda' \(2 of 2\) of chain 'c' returned str, expected a dict",
    ),
    (
        "chain-retries-negative",
        lambda: Chain([ok], retries=-1),
        ValidationError,
        r"retries must be an int >= 0, got -1",
    ),
    (
        "chain-retry-delay-negative",
        lambda: Chain([ok], retry_delay=[1, -2]),
        ValidationError,
        r"retry_delay must be seconds >= 0.*\[1, -2\]",
    ),
    (
        "chain-retry-on-bad",
        lambda: Chain([ok], retry_on="ValueError"),
        ValidationError,
        r"retry_on must be an exception type",
    ),
    (
        "chain-timeout-zero",
        lambda: Chain([ok], name="c", timeout=0),
        ValidationError,
        r"chain 'c': timeout must be > 0 seconds, got 0",
    ),
    (
        "chain-memory-wrong-type",
        lambda: Chain([ok], name="c", memory="buffer"),
        ValidationError,
        r"chain 'c': memory must come from memory.new_memory\(...\), got str",
    ),
    (
        "chain-error-handler-not-callable",
        lambda: Chain([ok], name="c", error_handler="log"),
        ValidationError,
        r"chain 'c': error_handler must be callable",
    ),
    (
        "chain-error-handler-returns-junk",
        lambda: Chain([lambda s: 1 / 0], name="c", error_handler=lambda e: 42).ainvoke("x"),
        ValidationError,
        r"chain 'c': error_handler must return an exception, a dict or None, got int",
    ),
    (
        "chain-error-handler-wrong-arity",
        lambda: Chain([ok], name="c", error_handler=lambda err, state: None),
        ValidationError,
        r"chain 'c': error_handler <lambda>\(err, state\) must take exactly one argument, the exception",
    ),
    # memory
    (
        "memory-unknown-type",
        lambda: memory.new_memory("vector"),
        ValidationError,
        r"unknown memory type 'vector'.*BUFFER",
    ),
    (
        "memory-window-k-zero",
        lambda: memory.new_memory("window", k=0),
        ValidationError,
        r"WindowMemory: k must be an int >= 1, got 0",
    ),
    (
        "memory-save-without-output-key",
        lambda: memory.new_memory().save_context({"input": "q"}, {"answer": "a"}),
        ValidationError,
        r"outputs has no 'output' key.*output_key=",
    ),
    # graphs: build time and compile()
    ("graph-empty", lambda: Graph(name="bad").compile(), GraphValidationError, r"graph 'bad' has no nodes"),
    (
        "graph-no-entry-point",
        lambda: graph("a", finish="a").compile(),
        GraphValidationError,
        r"no entry point; call set_entry_point",
    ),
    ("graph-no-finish-point", lambda: graph("a", entry="a").compile(), GraphValidationError, r"no finish point"),
    ("graph-duplicate-node", lambda: graph("a", "a"), ValidationError, r"node 'a' already present"),
    (
        "graph-edge-to-unknown-node",
        lambda: graph("a", edges=(("a", "ghost"),), entry="a", finish="a").compile(),
        GraphValidationError,
        r"'a' -> 'ghost' names unknown node 'ghost'",
    ),
    (
        "graph-unknown-entry-point",
        lambda: graph("a", entry="ghost", finish="a").compile(),
        GraphValidationError,
        r"'ghost' is not a node",
    ),
    (
        "graph-unconditional-cycle",
        lambda: graph("a", "b", edges=(("a", "b"), ("b", "a")), entry="a", finish="b").compile(),
        GraphValidationError,
        r"cycle",
    ),
    ("graph-reserved-node-name", lambda: graph(END), ValidationError, r"is reserved and cannot name a node"),
    (
        "graph-router-not-callable",
        lambda: graph("a").add_conditional_edges("a", "b"),
        ValidationError,
        r"router for 'a' must be callable, got str",
    ),
    (
        "graph-node-retries-negative",
        lambda: Graph(name="g").add_node("a", ok, retries=-1),
        ValidationError,
        r"retries must be an int >= 0, got -1",
    ),
    (
        "graph-recursion-limit-zero",
        lambda: Graph(name="g", recursion_limit=0),
        ValidationError,
        r"graph 'g': recursion_limit must be an int >= 1",
    ),
    # graphs: run time
    (
        "graph-input-wrong-type",
        lambda: graph("a", entry="a", finish="a").ainvoke(["x"]),
        ValidationError,
        r"expects a dict.*got list",
    ),
    (
        "graph-router-unknown-node",
        lambda: routed(lambda s: "nowhere").ainvoke({"input": "x"}),
        GraphValidationError,
        r"router 'router' of node 'a' returned 'nowhere', which is not one of \['a', 'b', '__end__'\]",
    ),
    (
        "graph-router-unknown-path-key",
        lambda: routed(lambda s: "maybe", {"yes": "b"}).ainvoke({"input": "x"}),
        GraphValidationError,
        r"returned 'maybe', which is not one of \['yes'\]",
    ),
    ("graph-cycle-with-no-exit", lambda: looping().ainvoke({"input": "x"}), GraphRecursionError, r"recursion_limit.*3"),
    (
        "graph-node-returns-non-dict",
        lambda: Graph(name="g").add_node("a", lambda s: None).set_entry_point("a").set_finish_point("a").ainvoke({}),
        StepOutputError,
        r"node 'a'.*returned NoneType, expected a dict",
    ),
    # chat models
    (
        "llm-unknown-provider",
        lambda: llms.Factory().create_provider("anthropic-ish", llms.Config()),
        ValidationError,
        r"unknown LLM provider 'anthropic-ish'; known providers: .*openai",
    ),
    (
        "llm-config-unknown-field",
        lambda: llms.Config(api_token="sk-x"),
        ValidationError,
        r"invalid llms.Config: api_token: Extra inputs",
    ),
    (
        "llm-config-temperature-out-of-range",
        lambda: llms.Config(temperature=3),
        ValidationError,
        r"temperature: Input should be less than or equal to 2",
    ),
    (
        "llm-config-base-url-not-http",
        lambda: llms.Config(base_url="localhost:8000"),
        ValidationError,
        r"base_url.*must start with http",
    ),
    ("llm-empty-messages", lambda: offline_llm().agenerate([]), ValidationError, r"messages is empty"),
    (
        "llm-input-not-a-str",
        lambda: offline_llm().ainvoke({"input": 42}),
        ValidationError,
        r"'input' must be a str, got int",
    ),
    # embeddings
    (
        "embed-empty-query",
        lambda: HashingEmbedder().embed_query(""),
        ValidationError,
        r"the query must be a non-empty str",
    ),
    (
        "embed-texts-not-a-list",
        lambda: HashingEmbedder().embed_documents("one text"),
        ValidationError,
        r"expected a list of str, got str",
    ),
    (
        "embed-item-not-a-str",
        lambda: HashingEmbedder().embed_documents(["a", 7]),
        ValidationError,
        r"item 1 is int, expected str",
    ),
    (
        "embed-oversized-input",
        lambda: openai_embedder().embed_documents(["ok", "word " * 9000]),
        ValidationError,
        r"text 1 is \d+ tokens, over the model's limit of 8191",
    ),
    ("embed-empty-text", lambda: openai_embedder().embed_documents(["ok", "  "]), ValidationError, r"text 1 is empty"),
    # vector stores and retrieval
    (
        "store-embedder-dimension-mismatch",
        lambda: store_with_docs(64).similarity_search_by_query("q", 1, HashingEmbedder(32)),
        ValidationError,
        r"dimension 32, the store holds dimension 64",
    ),
    (
        "store-vector-dimension-mismatch",
        lambda: store_with_docs(64).similarity_search_by_vector([0.1] * 8, 1),
        ValidationError,
        r"dimension 8, the store holds dimension 64",
    ),
    (
        "store-k-zero",
        lambda: store_with_docs().similarity_search_by_query("q", 0, HashingEmbedder(64)),
        ValidationError,
        r"k must be an int >= 1, got 0",
    ),
    (
        "store-k-negative",
        lambda: store_with_docs().similarity_search_by_query("q", -3, HashingEmbedder(64)),
        ValidationError,
        r"k must be an int >= 1, got -3",
    ),
    (
        "store-empty-query",
        lambda: store_with_docs().similarity_search_by_query("", 1, HashingEmbedder(64)),
        ValidationError,
        r"the query must be a non-empty str",
    ),
    (
        "store-filter-unknown-operator",
        lambda: store_with_docs().similarity_search_by_query(
            "q", 1, HashingEmbedder(64), filter={"source": {"$regex": "a"}}
        ),
        ValidationError,
        r"unknown filter operator '\$regex' for field 'source'",
    ),
    (
        "store-filter-not-a-dict",
        lambda: store_with_docs().similarity_search_by_query("q", 1, HashingEmbedder(64), filter="source=a.md"),
        ValidationError,
        r"must be a dict such as",
    ),
    (
        "store-filter-in-not-a-list",
        lambda: store_with_docs().similarity_search_by_query(
            "q", 1, HashingEmbedder(64), filter={"source": {"$in": "a.md"}}
        ),
        ValidationError,
        r"\$in for field 'source' takes a list",
    ),
    (
        "store-add-non-documents",
        lambda: InMemoryVectorStore().add_documents(["text"], HashingEmbedder()),
        ValidationError,
        r"item 0 is str, expected Document",
    ),
    (
        "store-load-missing-file",
        lambda: InMemoryVectorStore.load("/nonexistent/store.npz"),
        ValidationError,
        r"no file at /nonexistent/store.npz",
    ),
    (
        "pinecone-missing-api-key",
        lambda: PineconeVectorStore(host="http://127.0.0.1:9"),
        ValidationError,
        r"no Pinecone API key",
    ),
    (
        "retrieval-k-zero",
        lambda: RetrievalStep(store_with_docs(), HashingEmbedder(64), 0),
        ValidationError,
        r"RetrievalStep: k must be an int >= 1, got 0",
    ),
    # workflows
    (
        "workflow-unserialisable-input",
        lambda: workflow().execute({"input": "x", "when": object()}),
        ValidationError,
        r"must be JSON-serialisable.*key 'when' holds a object",
    ),
    ("workflow-input-wrong-type", lambda: workflow().execute(42), ValidationError, r"input must be a dict.*got int"),
    (
        "workflow-retries-negative",
        lambda: Orchestrator().create_workflow(ok, retries=-1),
        ValidationError,
        r"retries must be an int >= 0, got -1",
    ),
    (
        "workflow-bad-id",
        lambda: Orchestrator().create_workflow(ok, workflow_id="a/b"),
        ValidationError,
        r"workflow_id must be a non-empty string without /",
    ),
    (
        "workflow-fn-not-callable",
        lambda: Orchestrator().create_workflow(42, workflow_id="w"),
        ValidationError,
        r"workflow 'w' must be a Runnable or a callable",
    ),
]


@pytest.fixture(autouse=True)
def no_keys_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("PINECONE_API_KEY", raising=False)


async def outcome(call: Callable[[], Any]) -> Any:
    result = call()
    if inspect.isawaitable(result):
        result = await result
    return result


@pytest.mark.parametrize(("call", "error", "match"), [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
async def test_bad_input_gets_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        await outcome(call)


def test_the_catalogue_has_at_least_20_distinct_cases():
    ids = (
        [c[0] for c in CATALOGUE]
        + [c[0] for c in FLOW_CATALOGUE]
        + ["llm-missing-api-key", "chat-block-missing-api-key"]
    )
    assert len(ids) == len(set(ids)) >= 20


def test_missing_api_key():
    with pytest.raises(ValidationError, match=r"needs an OpenAI API key: pass api_key=.*OPENAI_API_KEY"):
        llms.Factory().create_provider("openai", llms.Config(provider="openai"))
    with pytest.raises(ValidationError, match=r"needs an OpenAI API key"):
        ChatModelBlock(provider="openai").get_chat_model()


# -- the deployable flows ------------------------------------------------------------------------

DOCS = {"prefect.md": "# Prefect\n\nPrefect runs flows made of tasks. A task can be retried.\n"}


@pytest.fixture
async def blocks(tmp_path: Path) -> dict[str, Any]:
    """Offline blocks, a docs folder with one file, already ingested."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    suffix = uuid.uuid4().hex[:8]
    names = {
        "embedder_block": f"emb-{suffix}",
        "vector_store_block": f"store-{suffix}",
        "chat_model_block": f"chat-{suffix}",
    }
    await EmbedderBlock(provider="hashing").asave(names["embedder_block"])
    await EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz")).asave(names["vector_store_block"])
    await ChatModelBlock(provider="offline").asave(names["chat_model_block"])
    await rag_ingest(
        str(folder), embedder_block=names["embedder_block"], vector_store_block=names["vector_store_block"]
    )
    return {"names": names, "docs": str(folder), "tmp": tmp_path}


def answer(ctx: dict[str, Any], question: str = "How is a task retried?", **changes: Any) -> Any:
    return rag_answer(question, **{**ctx["names"], **changes})


def ingest(ctx: dict[str, Any], source: str | None = None, **changes: Any) -> Any:
    names = {k: ctx["names"][k] for k in ("embedder_block", "vector_store_block")}
    return rag_ingest(source or ctx["docs"], **{**names, **changes})


# (id, call(ctx), expected exception type, regex the message must match)
FLOW_CATALOGUE: list[tuple[str, Callable[[dict[str, Any]], Any], type[BaseException], str]] = [
    (
        "answer-unknown-chat-model-block",
        lambda c: answer(c, chat_model_block="no-such-chat"),
        ValidationError,
        r"no beluga-chat-model block named 'no-such-chat'",
    ),
    (
        "answer-unknown-embedder-block",
        lambda c: answer(c, embedder_block="no-such-embedder"),
        ValidationError,
        r"no beluga-embedder block named 'no-such-embedder'",
    ),
    (
        "answer-unknown-vector-store-block",
        lambda c: answer(c, vector_store_block="no-such-store"),
        ValidationError,
        r"no vector store block named 'no-such-store'",
    ),
    ("answer-empty-question", lambda c: answer(c, "   "), ValidationError, r"needs a non-empty question under 'input'"),
    ("answer-k-zero", lambda c: answer(c, k=0), ValidationError, r"k must be an int >= 1, got 0"),
    (
        "answer-bad-session-id",
        lambda c: answer(c, session_id="../../etc/passwd", memory_dir=str(c["tmp"] / "m")),
        ValidationError,
        r"session_id",
    ),
    (
        "answer-memory-turns-zero",
        lambda c: answer(c, session_id="s", memory_turns=0, memory_dir=str(c["tmp"] / "m")),
        ValidationError,
        r"k must be an int >= 1, got 0",
    ),
    (
        "ingest-missing-source",
        lambda c: ingest(c, str(c["tmp"] / "nowhere")),
        ValidationError,
        r"nowhere.* is not a file, a folder or a glob",
    ),
    (
        "ingest-overlap-not-below-size",
        lambda c: ingest(c, chunk_size=40, chunk_overlap=50),
        ValidationError,
        r"chunk_overlap must be an int with 0 <= chunk_overlap < chunk_size \(40\), got 50",
    ),
    (
        "ingest-batch-size-zero",
        lambda c: ingest(c, batch_size=0),
        ValidationError,
        r"batch size must be an int >= 1, got 0",
    ),
    (
        "ingest-unknown-store-block",
        lambda c: ingest(c, vector_store_block="no-such-store"),
        ValidationError,
        r"no vector store block named 'no-such-store'",
    ),
    (
        "ingest-embedder-dimension-mismatch",
        lambda c: mismatched_ingest(c),
        ValidationError,
        r"dimension 32, the store holds dimension",
    ),
]


async def mismatched_ingest(ctx: dict[str, Any]) -> Any:
    """The store was filled by a 64-dimensional embedder; ingest with a 32-dimensional one."""
    name = f"emb32-{uuid.uuid4().hex[:8]}"
    await EmbedderBlock(provider="hashing", dimension=32).asave(name)
    (Path(ctx["docs"]) / "new.md").write_text("# New\n\nSomething new to embed.\n")
    return await ingest(ctx, embedder_block=name)


@pytest.mark.parametrize(
    ("call", "error", "match"), [c[1:] for c in FLOW_CATALOGUE], ids=[c[0] for c in FLOW_CATALOGUE]
)
async def test_bad_flow_input_gets_a_clear_error(blocks, call, error, match):
    with pytest.raises(error, match=match):
        await call(blocks)


# -- gaps found by this catalogue, now fixed -------------------------------------------------------


async def test_an_error_handler_recovery_without_output_keeps_memory_working():
    assert await recovered_without_output().ainvoke("hello") == {"answer": "sorry"}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Chain([ok], name="c", retries=-1), r"chain 'c'.*retries must be an int >= 0"),
        (lambda: Graph(name="g").add_node("a", ok, retries=-1), r"node 'a'.*retries must be an int >= 0"),
    ],
    ids=["chain", "graph-node"],
)
def test_retry_option_errors_name_their_owner(call, match):
    with pytest.raises(ValidationError, match=match):
        call()
