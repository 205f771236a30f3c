"""Prefect blocks: registration, save/load round trips, working components over real HTTP,
default documents from environment variables, and keys kept secret."""

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from prefect import flow
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_DATABASE_CONNECTION_URL
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr

from prefect_beluga import ValidationError
from prefect_beluga.blocks import (
    DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK,
    DEFAULT_CHAT_MODEL_BLOCK,
    DEFAULT_EMBEDDER_BLOCK,
    DEFAULT_OPENAI_CREDENTIALS_BLOCK,
    DEFAULT_PINECONE_CREDENTIALS_BLOCK,
    DEFAULT_STORE_BLOCK,
    AzureOpenAICredentials,
    ChatModelBlock,
    EmbeddedVectorStoreBlock,
    EmbedderBlock,
    OpenAICredentials,
    PineconeCredentials,
    PineconeVectorStoreBlock,
    VectorStoreBlock,
    asave_default_blocks,
    block_names,
    load_vector_store_block,
    save_default_blocks,
)
from prefect_beluga.embeddings import HashingEmbedder, OpenAIEmbedder
from prefect_beluga.llms import OFFLINE_PREFIX, OfflineChatModel, OpenAIChatModel
from prefect_beluga.schema import Document, HumanMessage, SystemMessage
from prefect_beluga.vectorstores import InMemoryVectorStore, PineconeVectorStore

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = [
    OpenAICredentials,
    AzureOpenAICredentials,
    PineconeCredentials,
    ChatModelBlock,
    EmbedderBlock,
    EmbeddedVectorStoreBlock,
    PineconeVectorStoreBlock,
]
SLUGS = {
    OpenAICredentials: "beluga-openai-credentials",
    AzureOpenAICredentials: "beluga-azure-openai-credentials",
    PineconeCredentials: "beluga-pinecone-credentials",
    ChatModelBlock: "beluga-chat-model",
    EmbedderBlock: "beluga-embedder",
    EmbeddedVectorStoreBlock: "beluga-embedded-vector-store",
    PineconeVectorStoreBlock: "beluga-pinecone-vector-store",
}
BLOCK_TYPE_SLUGS = tuple(SLUGS.values())
DEFAULT_NAMES = [
    DEFAULT_CHAT_MODEL_BLOCK,
    DEFAULT_EMBEDDER_BLOCK,
    DEFAULT_STORE_BLOCK,
    DEFAULT_OPENAI_CREDENTIALS_BLOCK,
    DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK,
    DEFAULT_PINECONE_CREDENTIALS_BLOCK,
]
SECRET = "sk-very-secret-0123456789"
DOCS = [
    Document(page_content=text, metadata={"source": "notes.md", "chunk": i}, id=f"notes-{i}")
    for i, text in enumerate(["Prefect retries failed tasks.", "Pinecone stores vectors.", "Bananas are yellow."])
]


class TestBlockStandards(BlockStandardTestSuite):
    @pytest.fixture(params=BLOCKS, ids=[b.__name__ for b in BLOCKS])
    def block(self, request):
        return request.param


async def documents_named(name: str, slugs: tuple[str, ...] = BLOCK_TYPE_SLUGS) -> dict[str, object]:
    """The block documents called `name`, by type slug (secrets obscured)."""
    found = {}
    async with get_client() as client:
        for slug in slugs:
            try:
                found[slug] = await client.read_block_document_by_name(name, slug, include_secrets=False)
            except ObjectNotFound:
                pass
    return found


async def delete_defaults() -> None:
    async with get_client() as client:
        for slug in SLUGS.values():
            try:
                documents = await client.read_block_documents_by_type(slug, include_secrets=False)
            except PrefectHTTPStatusError as exc:  # 404: the type is not registered yet
                if exc.response.status_code == 404:
                    continue
                raise
            for document in documents:
                if document.name in DEFAULT_NAMES:
                    await client.delete_block_document(document.id)


@pytest.fixture
async def clean_defaults():
    """No documents under the default names before or after the test (other modules use them too)."""
    await delete_defaults()
    yield
    await delete_defaults()


# -- types and registration ---------------------------------------------------------------------


def test_slugs_and_names():
    assert {cls: cls.get_block_type_slug() for cls in BLOCKS} == SLUGS
    assert OpenAICredentials.get_block_type_slug() != "openai-credentials"  # prefect-openai's
    assert all(issubclass(cls, VectorStoreBlock) for cls in (EmbeddedVectorStoreBlock, PineconeVectorStoreBlock))
    with pytest.raises(TypeError):
        VectorStoreBlock()  # an interface


def test_prefect_block_register_cli_registers_every_block_with_field_descriptions():
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_beluga.blocks"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully registered 7 blocks" in done.stdout, done.stdout

    with get_client(sync_client=True) as client:
        for cls, slug in SLUGS.items():
            block_type = client.read_block_type_by_slug(slug)
            assert block_type.name == cls.get_block_type_name() and block_type.name.startswith("Beluga ")
            assert block_type.description and block_type.documentation_url
            assert f'{cls.__name__}.load("BLOCK_NAME")' in block_type.code_example
            schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
            for field, spec in schema.fields["properties"].items():
                if field != "credentials" or cls is PineconeVectorStoreBlock:
                    assert spec.get("description", "").endswith("."), (slug, field)
        with pytest.raises(ObjectNotFound):
            client.read_block_type_by_slug("vectorstoreblock")
        schema = client.get_most_recent_block_schema_for_block_type(
            client.read_block_type_by_slug("beluga-openai-credentials").id
        )
        assert schema.fields["secret_fields"] == ["api_key"]


# -- round trips --------------------------------------------------------------------------------


async def test_round_trips_keep_every_field_and_reference_the_credentials(tmp_path):
    openai_credentials = OpenAICredentials(
        api_key=SecretStr(SECRET), base_url="http://127.0.0.1:1/v1", organization="org-7"
    )
    await openai_credentials.asave("rt-openai", overwrite=True)
    pinecone_credentials = PineconeCredentials(api_key=SecretStr("pc-secret"))
    await pinecone_credentials.asave("rt-pinecone", overwrite=True)
    blocks = {
        "rt-chat": ChatModelBlock(
            provider="openai",
            model_name="gpt-4o",
            temperature=0.2,
            max_tokens=64,
            timeout=5,
            options={"seed": 1},
            credentials=openai_credentials,
        ),
        "rt-embedder": EmbedderBlock(
            provider="openai",
            model_name="text-embedding-3-large",
            dimension=256,
            batch_size=8,
            max_concurrency=2,
            credentials=openai_credentials,
        ),
        "rt-embedded": EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz"), dimension=384),
        "rt-pinecone-store": PineconeVectorStoreBlock(
            index_name="docs", namespace="handbook", credentials=pinecone_credentials, batch_size=50, max_concurrency=2
        ),
    }
    for name, block in blocks.items():
        await block.asave(name, overwrite=True)
        loaded = await type(block).aload(name)
        assert loaded.model_dump() == block.model_dump(), name
    loaded = await ChatModelBlock.aload("rt-chat")
    assert loaded.credentials.api_key.get_secret_value() == SECRET
    assert (await OpenAICredentials.aload("rt-openai")).organization == "org-7"
    assert (
        await PineconeVectorStoreBlock.aload("rt-pinecone-store")
    ).credentials.api_key.get_secret_value() == "pc-secret"

    # The chat model and embedder documents point at the credentials document: rotate the key once.
    async with get_client() as client:
        chat = await client.read_block_document_by_name("rt-chat", "beluga-chat-model")
        assert chat.block_document_references["credentials"]["block_document"]["name"] == "rt-openai"
    await OpenAICredentials(api_key=SecretStr("sk-rotated"), base_url="http://127.0.0.1:1/v1").asave(
        "rt-openai", overwrite=True
    )
    assert (await EmbedderBlock.aload("rt-embedder")).credentials.api_key.get_secret_value() == "sk-rotated"


def test_bad_values_are_refused_up_front():
    with pytest.raises(ValueError, match="index_name.*host"):
        PineconeVectorStoreBlock(credentials=PineconeCredentials(api_key=SecretStr("k")))
    with pytest.raises(ValueError, match="http"):
        OpenAICredentials(api_key=SecretStr("k"), base_url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="provider"):
        EmbedderBlock(provider="word2vec")
    with pytest.raises(ValueError, match="temperature"):
        ChatModelBlock(temperature=3)
    with pytest.raises(ValidationError, match="unknown LLM provider 'nope'; known providers: .*offline"):
        ChatModelBlock(provider="nope").get_chat_model()


# -- working components -------------------------------------------------------------------------


def test_chat_model_block_honours_credentials_base_url_and_organization_over_http(openai_server):
    credentials = OpenAICredentials(
        api_key=SecretStr("sk-test"), base_url=openai_server.base_url, organization="org-42"
    )
    block = ChatModelBlock(
        provider="openai",
        model_name="gpt-4o-mini",
        temperature=0.5,
        max_tokens=20,
        options={"seed": 7},
        credentials=credentials,
    )
    llm = block.get_chat_model()
    assert isinstance(llm, OpenAIChatModel)
    assert llm.generate([SystemMessage("Be brief."), HumanMessage("hello")]).content == "Echo: hello"
    request = openai_server.requests_to("/v1/chat/completions")[-1]
    assert request.bearer == "sk-test"
    assert request.headers["openai-organization"] == "org-42"
    assert request.body["model"] == "gpt-4o-mini" and request.body["seed"] == 7
    assert request.body["temperature"] == 0.5 and request.body["max_tokens"] == 20

    client = credentials.get_client()
    assert client.models.list().data is not None
    assert openai_server.requests[-1].headers["openai-organization"] == "org-42"

    wrong = ChatModelBlock(
        provider="openai", credentials=OpenAICredentials(api_key=SecretStr(SECRET), base_url=openai_server.base_url)
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.get_chat_model().generate("hello")
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.args)


def test_chat_model_block_offline_needs_nothing():
    llm = ChatModelBlock().get_chat_model()
    assert isinstance(llm, OfflineChatModel)
    reply = llm.generate(
        [SystemMessage("Context: Pinecone stores vectors."), HumanMessage("What does Pinecone store?")]
    )
    assert reply.content.startswith(OFFLINE_PREFIX)


def test_embedder_block_over_http_and_offline(openai_server):
    credentials = OpenAICredentials(api_key=SecretStr("sk-test"), base_url=openai_server.base_url)
    embedder = EmbedderBlock(
        provider="openai", dimension=16, batch_size=2, max_concurrency=1, credentials=credentials
    ).get_embedder()
    assert isinstance(embedder, OpenAIEmbedder) and embedder.dimension == 16
    vectors = embedder.embed_documents(["a", "b", "c"])
    assert [len(v) for v in vectors] == [16, 16, 16]
    requests = openai_server.requests_to("/v1/embeddings")
    assert len(requests) == 2 and {r.bearer for r in requests} == {"sk-test"}
    assert requests[0].body["model"] == "text-embedding-3-small" and requests[0].body["dimensions"] == 16

    hashing = EmbedderBlock().get_embedder()
    assert isinstance(hashing, HashingEmbedder) and hashing.dimension == 384
    assert EmbedderBlock(dimension=64).get_embedder().dimension == 64

    with_org = EmbedderBlock(
        provider="openai", credentials=OpenAICredentials(api_key=SecretStr("k"), organization="org-1")
    )
    with pytest.raises(ValidationError, match="organization"):
        with_org.get_embedder()


def test_pinecone_block_honours_host_key_and_namespace_over_http(pinecone_server):
    credentials = PineconeCredentials(api_key=SecretStr("pc-test"))
    block = PineconeVectorStoreBlock(
        host=pinecone_server.url, namespace="handbook", credentials=credentials, batch_size=2
    )
    store = block.get_store()
    assert isinstance(store, PineconeVectorStore)
    embedder = HashingEmbedder(64)
    store.add_documents(DOCS, embedder)
    assert pinecone_server.vector_count("handbook") == 3 and pinecone_server.vector_count("") == 0
    assert len(pinecone_server.requests_to("/vectors/upsert")) == 2
    assert {r.headers["api-key"] for r in pinecone_server.requests} == {"pc-test"}
    docs, _ = store.similarity_search_by_query("What stores vectors?", 1, embedder)
    assert docs[0].page_content == "Pinecone stores vectors."
    block.persist(store)  # nothing to do for a remote store
    assert pinecone_server.vector_count("handbook") == 3

    assert credentials.get_client().Index(host=pinecone_server.url).describe_index_stats().dimension == 64


def test_embedded_store_block_starts_empty_persists_and_reloads(tmp_path):
    block = EmbeddedVectorStoreBlock(path=str(tmp_path / "sub" / "store.npz"), dimension=64)
    store = block.get_store()
    assert isinstance(store, InMemoryVectorStore) and len(store) == 0 and store.dimension == 64
    store.add_documents(DOCS, HashingEmbedder(64))
    block.persist(store)
    again = block.get_store()
    assert len(again) == 3 and again.get_by_ids(["notes-1"])[0].page_content == "Pinecone stores vectors."

    with pytest.raises(ValidationError, match="dimension 64, the block expects 32"):
        EmbeddedVectorStoreBlock(path=block.path, dimension=32).get_store()
    other = InMemoryVectorStore()
    other.add_documents(DOCS[:1], HashingEmbedder(16))
    with pytest.raises(ValidationError, match="dimension 16, the block expects 64"):
        block.persist(other)
    with pytest.raises(ValidationError, match="expected an InMemoryVectorStore"):
        block.persist(object())
    assert len(block.get_store()) == 3  # nothing lost


def test_embedded_store_block_runs_persisting_at_once_both_keep_their_documents(tmp_path):
    block = EmbeddedVectorStoreBlock(path=str(tmp_path / "store.npz"), dimension=64)
    first, second = block.get_store(), block.get_store()  # two flow runs, started together
    first.add_documents(DOCS[:2], HashingEmbedder(64))
    second.add_documents(DOCS[2:], HashingEmbedder(64))
    block.persist(first)
    block.persist(second)
    assert sorted(d.id for d in block.get_store().get_by_ids([d.id for d in DOCS])) == sorted(d.id for d in DOCS)


# -- loading "the vector store block called X" --------------------------------------------------


async def test_load_vector_store_block_finds_either_type_by_name(tmp_path):
    credentials = PineconeCredentials(api_key=SecretStr("pc-test"))
    await EmbeddedVectorStoreBlock(path=str(tmp_path / "s.npz")).asave("lv-embedded", overwrite=True)
    await PineconeVectorStoreBlock(host="http://127.0.0.1:9", credentials=credentials).asave(
        "lv-pinecone", overwrite=True
    )
    assert isinstance(await load_vector_store_block("lv-embedded"), EmbeddedVectorStoreBlock)
    loaded = await load_vector_store_block("lv-pinecone")
    assert isinstance(loaded, PineconeVectorStoreBlock) and loaded.credentials.api_key.get_secret_value() == "pc-test"

    with pytest.raises(ValidationError, match="no vector store block named 'lv-missing'.*beluga-embedded-vector-store"):
        await load_vector_store_block("lv-missing")
    await PineconeVectorStoreBlock(host="http://127.0.0.1:9", credentials=credentials).asave(
        "lv-embedded", overwrite=True
    )
    with pytest.raises(ValidationError, match="'lv-embedded' names a vector store block of each of the types"):
        await load_vector_store_block("lv-embedded")


# -- default documents from the environment -----------------------------------------------------


async def test_defaults_without_keys_are_offline_and_idempotent(tmp_path, clean_defaults):
    env = {"BELUGA_STORE_PATH": str(tmp_path / "store.npz")}
    report = await asave_default_blocks(env)
    assert report == {
        DEFAULT_CHAT_MODEL_BLOCK: "OPENAI_API_KEY is not set: saved the offline chat model as 'beluga-chat'",
        DEFAULT_EMBEDDER_BLOCK: (
            "OPENAI_API_KEY is not set: saved the offline hashing embedder (dimension 384) as 'beluga-embedder'"
        ),
        DEFAULT_STORE_BLOCK: (
            f"PINECONE_API_KEY is not set: saved the embedded store at {tmp_path / 'store.npz'} as 'beluga-store'"
        ),
    }
    first = {name: await documents_named(name) for name in DEFAULT_NAMES}
    assert await asave_default_blocks(env) == report
    again = {name: await documents_named(name) for name in DEFAULT_NAMES}
    assert {n: {s: d.id for s, d in docs.items()} for n, docs in again.items()} == {
        n: {s: d.id for s, d in docs.items()} for n, docs in first.items()
    }
    assert set(again[DEFAULT_STORE_BLOCK]) == {"beluga-embedded-vector-store"}
    assert not again[DEFAULT_OPENAI_CREDENTIALS_BLOCK] and not again[DEFAULT_PINECONE_CREDENTIALS_BLOCK]

    llm = (await ChatModelBlock.aload(DEFAULT_CHAT_MODEL_BLOCK)).get_chat_model()
    embedder = (await EmbedderBlock.aload(DEFAULT_EMBEDDER_BLOCK)).get_embedder()
    store_block = await load_vector_store_block(DEFAULT_STORE_BLOCK)
    assert isinstance(llm, OfflineChatModel) and isinstance(embedder, HashingEmbedder)
    store = store_block.get_store()
    store.add_documents(DOCS, embedder)
    store_block.persist(store)
    docs, _ = (
        (await load_vector_store_block(DEFAULT_STORE_BLOCK))
        .get_store()
        .similarity_search_by_query("yellow bananas", 1, embedder)
    )
    assert docs[0].id == "notes-2"


def test_default_store_path_is_under_prefect_home_and_named_after_the_embedder(clean_defaults_sync):
    report = save_default_blocks({})
    path = Path(PREFECT_HOME.value()).resolve() / "beluga" / "store-hashing-384.npz"
    assert (
        report[DEFAULT_STORE_BLOCK]
        == f"PINECONE_API_KEY is not set: saved the embedded store at {path} as 'beluga-store'"
    )
    assert EmbeddedVectorStoreBlock.load(DEFAULT_STORE_BLOCK).dimension == 384
    report = save_default_blocks({"BELUGA_EMBEDDING_DIMENSION": "128", "PREFECT_HOME": "/srv/prefect"})
    assert EmbeddedVectorStoreBlock.load(DEFAULT_STORE_BLOCK).path == "/srv/prefect/beluga/store-hashing-128.npz"
    assert "(dimension 128)" in report[DEFAULT_EMBEDDER_BLOCK]


async def test_save_default_blocks_works_from_inside_an_async_flow(tmp_path, clean_defaults):
    @flow
    async def setup() -> dict[str, str]:
        report = save_default_blocks(
            {"BELUGA_STORE_PATH": str(tmp_path / "store.npz")}
        )  # sync, as the quickstart calls it
        store_block = await load_vector_store_block(DEFAULT_STORE_BLOCK)
        return {**report, "loaded": type(store_block).__name__}

    report = await setup()
    assert report["loaded"] == "EmbeddedVectorStoreBlock"
    assert set(await documents_named(DEFAULT_CHAT_MODEL_BLOCK)) == {"beluga-chat-model"}


@pytest.fixture
def clean_defaults_sync():
    from prefect_beluga.core._sync import run_sync

    run_sync(delete_defaults())
    yield
    run_sync(delete_defaults())


async def test_defaults_with_openai_key_use_it_over_http(openai_server, tmp_path, clean_defaults):
    env = {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_server.base_url,
        "BELUGA_CHAT_MODEL": "gpt-4o",
        "BELUGA_EMBEDDING_DIMENSION": "16",
        "BELUGA_STORE_PATH": str(tmp_path / "store.npz"),
    }
    report = await asave_default_blocks(env)
    assert (
        report[DEFAULT_OPENAI_CREDENTIALS_BLOCK]
        == f"saved the OpenAI credentials for {openai_server.base_url} as 'beluga-openai'"
    )
    assert report[DEFAULT_CHAT_MODEL_BLOCK] == "saved the OpenAI chat model 'gpt-4o' as 'beluga-chat'"
    assert (
        report[DEFAULT_EMBEDDER_BLOCK]
        == "saved the OpenAI embedder 'text-embedding-3-small' (dimension 16) as 'beluga-embedder'"
    )

    llm = (await ChatModelBlock.aload(DEFAULT_CHAT_MODEL_BLOCK)).get_chat_model()
    assert (await llm.agenerate("hi")).content == "Echo: hi"
    embedder = (await EmbedderBlock.aload(DEFAULT_EMBEDDER_BLOCK)).get_embedder()
    assert len(await embedder.aembed_query("hi")) == 16
    assert {r.bearer for r in openai_server.requests} == {"sk-test"}
    assert openai_server.requests_to("/v1/chat/completions")[-1].body["model"] == "gpt-4o"
    async with get_client() as client:
        for name, slug in (
            (DEFAULT_CHAT_MODEL_BLOCK, "beluga-chat-model"),
            (DEFAULT_EMBEDDER_BLOCK, "beluga-embedder"),
        ):
            document = await client.read_block_document_by_name(name, slug)
            assert (
                document.block_document_references["credentials"]["block_document"]["name"]
                == DEFAULT_OPENAI_CREDENTIALS_BLOCK
            )


async def test_defaults_with_pinecone_take_the_index_dimension_and_replace_the_embedded_store(
    pinecone_server, tmp_path, clean_defaults
):
    await asave_default_blocks({"BELUGA_STORE_PATH": str(tmp_path / "store.npz")})
    env = {"PINECONE_API_KEY": "pc-test", "PINECONE_HOST": pinecone_server.url, "PINECONE_NAMESPACE": "handbook"}
    report = await asave_default_blocks(env)
    assert report[DEFAULT_PINECONE_CREDENTIALS_BLOCK] == "saved the Pinecone credentials as 'beluga-pinecone'"
    assert (
        report[DEFAULT_EMBEDDER_BLOCK]
        == "OPENAI_API_KEY is not set: saved the offline hashing embedder (dimension 64) as 'beluga-embedder'"
    )
    assert report[DEFAULT_STORE_BLOCK] == (
        f"saved the Pinecone store (host {pinecone_server.url}, namespace 'handbook') as 'beluga-store' "
        "(replacing the beluga-embedded-vector-store block of that name)"
    )
    assert set(await documents_named(DEFAULT_STORE_BLOCK)) == {"beluga-pinecone-vector-store"}

    embedder = (await EmbedderBlock.aload(DEFAULT_EMBEDDER_BLOCK)).get_embedder()
    store_block = await load_vector_store_block(DEFAULT_STORE_BLOCK)
    store = store_block.get_store()
    await store.aadd_documents(DOCS, embedder)
    assert pinecone_server.vector_count("handbook") == 3

    with pytest.raises(
        ValidationError, match="dimension 64 but the embedder 'beluga-embedder' makes 32.*BELUGA_EMBEDDING_DIMENSION=64"
    ):
        await asave_default_blocks({**env, "BELUGA_EMBEDDING_DIMENSION": "32"})


async def test_a_prefix_is_a_namespace_that_shares_nothing_with_the_defaults(pinecone_server, tmp_path, clean_defaults):
    """The quickstart's blocks (`prefix="quickstart"`): their own names, store file and Pinecone namespace."""
    defaults = await asave_default_blocks({"BELUGA_STORE_PATH": str(tmp_path / "store.npz")})
    own = await asave_default_blocks({"BELUGA_STORE_PATH": str(tmp_path / "store.npz")}, prefix="quickstart")
    assert set(own) == {"quickstart-chat", "quickstart-embedder", "quickstart-store"} and not set(own) & set(defaults)
    assert block_names("quickstart")["store"] == "quickstart-store"
    assert (await load_vector_store_block(DEFAULT_STORE_BLOCK)).path == str(tmp_path / "store.npz")
    assert (await load_vector_store_block("quickstart-store")).path == str(tmp_path / "quickstart-store.npz")

    env = {"PINECONE_API_KEY": "pc-test", "PINECONE_HOST": pinecone_server.url, "PINECONE_NAMESPACE": "handbook"}
    report = await asave_default_blocks(env, prefix="quickstart")
    assert "namespace 'handbook-quickstart'" in report["quickstart-store"]
    assert (await load_vector_store_block("quickstart-store")).namespace == "handbook-quickstart"
    with pytest.raises(ValidationError, match="prefix must be"):
        block_names("Quick Start")
    async with get_client() as client:  # the session's other tests use no "quickstart-" documents
        for slug in SLUGS.values():
            with contextlib.suppress(PrefectHTTPStatusError):
                for document in await client.read_block_documents_by_type(slug, include_secrets=False):
                    if document.name.startswith("quickstart-"):
                        await client.delete_block_document(document.id)


async def test_defaults_refuse_bad_variables_before_saving_anything(tmp_path, clean_defaults):
    with pytest.raises(
        ValidationError, match="PINECONE_API_KEY is set but neither PINECONE_INDEX .* nor PINECONE_HOST"
    ):
        await asave_default_blocks({"PINECONE_API_KEY": "pc-test", "OPENAI_API_KEY": "sk-x"})
    with pytest.raises(ValidationError, match="BELUGA_EMBEDDING_DIMENSION must be a whole number >= 1, got 'big'"):
        await asave_default_blocks({"BELUGA_EMBEDDING_DIMENSION": "big"})
    for name in DEFAULT_NAMES:
        assert not await documents_named(name), name

    wrong = InMemoryVectorStore()
    wrong.add_documents(DOCS, HashingEmbedder(32))
    wrong.save(tmp_path / "store.npz")
    with pytest.raises(ValidationError, match="holds vectors of dimension 32, the block expects 384"):
        await asave_default_blocks({"BELUGA_STORE_PATH": str(tmp_path / "store.npz")})
    assert not await documents_named(DEFAULT_CHAT_MODEL_BLOCK)


async def test_defaults_without_overwrite_keep_what_exists(openai_server, tmp_path, clean_defaults):
    await asave_default_blocks({"BELUGA_STORE_PATH": str(tmp_path / "store.npz")})
    env = {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_server.base_url,
        "BELUGA_STORE_PATH": str(tmp_path / "other.npz"),
    }
    report = await asave_default_blocks(env, overwrite=False)
    assert (
        report[DEFAULT_CHAT_MODEL_BLOCK] == "kept the existing beluga-chat-model block 'beluga-chat' (overwrite=False)"
    )
    assert (
        report[DEFAULT_STORE_BLOCK]
        == "kept the existing beluga-embedded-vector-store block 'beluga-store' (overwrite=False)"
    )
    assert (
        report[DEFAULT_OPENAI_CREDENTIALS_BLOCK]
        == f"saved the OpenAI credentials for {openai_server.base_url} as 'beluga-openai'"
    )
    assert (await ChatModelBlock.aload(DEFAULT_CHAT_MODEL_BLOCK)).provider == "offline"
    assert (await EmbeddedVectorStoreBlock.aload(DEFAULT_STORE_BLOCK)).path == str(tmp_path / "store.npz")

    report = await asave_default_blocks(env)  # overwrite: now everything follows the environment
    assert (await ChatModelBlock.aload(DEFAULT_CHAT_MODEL_BLOCK)).provider == "openai"
    assert "(dimension 1536)" in report[DEFAULT_EMBEDDER_BLOCK]


# -- the CLI script -----------------------------------------------------------------------------


def load_script():
    spec = importlib.util.spec_from_file_location("create_blocks", ROOT / "blocks" / "create_blocks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_create_blocks_script_prints_what_it_saved(tmp_path, monkeypatch, capsys, clean_defaults_sync):
    for name in ("OPENAI_API_KEY", "PINECONE_API_KEY", "BELUGA_EMBEDDING_DIMENSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BELUGA_STORE_PATH", str(tmp_path / "store.npz"))
    script = load_script()
    assert script.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "OPENAI_API_KEY is not set: saved the offline chat model as 'beluga-chat'"
    assert len(lines) == 3
    assert script.main(["--no-overwrite"]) == 0
    assert "kept the existing beluga-chat-model block 'beluga-chat' (overwrite=False)" in capsys.readouterr().out

    monkeypatch.setenv("PINECONE_API_KEY", "pc-test")
    assert script.main([]) == 2
    assert "error: PINECONE_API_KEY is set but neither PINECONE_INDEX" in capsys.readouterr().err


def test_create_blocks_script_runs_as_a_command(tmp_path, clean_defaults_sync):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PINECONE_API_KEY")}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), BELUGA_STORE_PATH=str(tmp_path / "store.npz"))
    done = subprocess.run(
        [sys.executable, "blocks/create_blocks.py", "--no-overwrite"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[-1]
        == f"PINECONE_API_KEY is not set: saved the embedded store at {tmp_path / 'store.npz'} as 'beluga-store'"
    )


# -- secrets ------------------------------------------------------------------------------------


async def test_keys_never_show_in_reprs_dumps_or_the_stored_documents():
    credentials = OpenAICredentials(api_key=SecretStr(SECRET))
    chat = ChatModelBlock(provider="openai", credentials=credentials)
    pinecone = PineconeVectorStoreBlock(index_name="docs", credentials=PineconeCredentials(api_key=SecretStr(SECRET)))
    for block in (credentials, chat, pinecone):
        for text in (repr(block), str(block), block.model_dump_json(), str(block.model_dump())):
            assert SECRET not in text
    assert SECRET not in repr(chat.get_chat_model()) and SECRET not in repr(pinecone.get_store())

    await credentials.asave("secret-openai", overwrite=True)
    await chat.asave("secret-chat", overwrite=True)
    await pinecone.asave("secret-pinecone", overwrite=True)
    async with get_client() as client:
        document = await client.read_block_document_by_name(
            "secret-openai", "beluga-openai-credentials", include_secrets=False
        )
        assert document.data["api_key"] != SECRET and set(document.data["api_key"]) == {"*"}
        document = await client.read_block_document_by_name("secret-chat", "beluga-chat-model", include_secrets=False)
        assert SECRET not in str(document)
    assert (await ChatModelBlock.aload("secret-chat")).credentials.api_key.get_secret_value() == SECRET

    database = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    for file in database.parent.glob(database.name + "*"):  # the database and its WAL
        assert SECRET.encode() not in file.read_bytes(), file


def test_block_load_by_slug_works_for_every_type(tmp_path):
    EmbeddedVectorStoreBlock(path=str(tmp_path / "x.npz")).save("slug-load", overwrite=True)
    assert isinstance(Block.load("beluga-embedded-vector-store/slug-load"), EmbeddedVectorStoreBlock)


# -- Azure OpenAI and server presets ------------------------------------------------------------


def test_azure_blocks_build_working_components_over_http(tmp_path):
    from prefect_beluga.testing.openai_server import OpenAIServer

    with OpenAIServer(api_key=SECRET, dialect="azure_openai", dimension=16) as azure:
        credentials = AzureOpenAICredentials(azure_endpoint=azure.base_url, api_key=SecretStr(SECRET))
        credentials.save("test-azure-credentials", overwrite=True)
        ChatModelBlock(provider="azure_openai", model_name="chat-prod", credentials=credentials).save(
            "test-azure-chat", overwrite=True)
        EmbedderBlock(provider="azure_openai", model_name="embed-prod", azure_model="text-embedding-3-small",
                      dimension=16, credentials=credentials).save("test-azure-embedder", overwrite=True)
        llm = ChatModelBlock.load("test-azure-chat").get_chat_model()
        assert llm.generate("hi").content == "Echo: hi"
        embedder = EmbedderBlock.load("test-azure-embedder").get_embedder()
        assert len(embedder.embed_query("hi")) == 16
        paths = [r.path for r in azure.requests]
        assert paths == ["/openai/deployments/chat-prod/chat/completions", "/openai/deployments/embed-prod/embeddings"]
        assert {r.headers["api-key"] for r in azure.requests} == {SECRET}
        assert {r.query for r in azure.requests} == {"api-version=2024-10-21"}
        client = AzureOpenAICredentials.load("test-azure-credentials").get_client()
        assert client.chat.completions.create(model="chat-prod", messages=[{"role": "user", "content": "x"}])
        assert SECRET not in repr(credentials) + credentials.model_dump_json()
    with pytest.raises(ValidationError, match="Azure OpenAI credentials go with provider 'azure_openai'"):
        ChatModelBlock(provider="openai", credentials=credentials).get_chat_model()
    with pytest.raises(ValueError, match="must start with http"):
        AzureOpenAICredentials(azure_endpoint="my-resource.openai.azure.com")


def test_chat_model_block_server_preset_and_capabilities(openai_server):
    block = ChatModelBlock(provider="openai", server="vllm", model_name="qwen", capabilities={"seed": False},
                           credentials=OpenAICredentials(api_key=SecretStr("sk-test"), base_url=openai_server.base_url))
    llm = block.get_chat_model()
    assert llm.server.name == "vllm" and llm.capabilities.seed is False
    assert llm.generate("hi").content == "Echo: hi"
    with pytest.raises(ValidationError, match="unknown server preset 'nope'"):
        ChatModelBlock(provider="openai", server="nope", credentials=block.credentials).get_chat_model()


async def test_defaults_with_azure_variables_save_azure_blocks(tmp_path, clean_defaults):
    from prefect_beluga.testing.openai_server import OpenAIServer

    with OpenAIServer(api_key=SECRET, dialect="azure_openai", dimension=16) as azure:
        env = {
            "AZURE_OPENAI_ENDPOINT": azure.base_url,
            "AZURE_OPENAI_API_KEY": SECRET,
            "OPENAI_API_VERSION": "2025-01-01-preview",
            "AZURE_OPENAI_CHAT_DEPLOYMENT": "chat-prod",
            "AZURE_OPENAI_EMBEDDING_DEPLOYMENT": "text-embedding-3-small",
            "BELUGA_EMBEDDING_DIMENSION": "16",
            "BELUGA_STORE_PATH": str(tmp_path / "store.npz"),
        }
        report = await asave_default_blocks(env)
        assert report[DEFAULT_AZURE_OPENAI_CREDENTIALS_BLOCK].startswith(
            f"saved the Azure OpenAI credentials for {azure.base_url} (api-version 2025-01-01-preview)")
        assert report[DEFAULT_CHAT_MODEL_BLOCK] == (
            "saved the Azure OpenAI chat model (deployment 'chat-prod') as 'beluga-chat'")
        llm = (await ChatModelBlock.aload(DEFAULT_CHAT_MODEL_BLOCK)).get_chat_model()
        assert (await llm.agenerate("hi")).content == "Echo: hi"
        embedder = (await EmbedderBlock.aload(DEFAULT_EMBEDDER_BLOCK)).get_embedder()
        assert len(await embedder.aembed_query("hi")) == 16
        assert {r.query for r in azure.requests} == {"api-version=2025-01-01-preview"}
    with pytest.raises(ValidationError, match="AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_API_KEY is not"):
        await asave_default_blocks({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"})
    with pytest.raises(ValidationError, match="BELUGA_OPENAI_SERVER: unknown server preset 'grok'"):
        await asave_default_blocks({"OPENAI_API_KEY": "k", "BELUGA_OPENAI_SERVER": "grok"})


async def test_defaults_with_a_server_preset_without_embeddings_use_the_hashing_embedder(
    openai_server, tmp_path, clean_defaults
):
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": openai_server.base_url, "BELUGA_OPENAI_SERVER": "groq",
           "BELUGA_STORE_PATH": str(tmp_path / "store.npz")}
    report = await asave_default_blocks(env)
    assert "on the groq server preset" in report[DEFAULT_CHAT_MODEL_BLOCK]
    assert "the groq server preset has no embeddings endpoint" in report[DEFAULT_EMBEDDER_BLOCK]
    llm = (await ChatModelBlock.aload(DEFAULT_CHAT_MODEL_BLOCK)).get_chat_model()
    assert llm.server.name == "groq" and (await llm.agenerate("hi")).content == "Echo: hi"
