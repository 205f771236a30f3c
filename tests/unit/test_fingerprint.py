"""Value fingerprints and canonical JSON (the cross-run cache's keys), without Prefect's API."""

from __future__ import annotations

import math

import pytest

from prefect_beluga.core.fingerprint import NoCanonicalForm, canonical_json, fingerprint, secret_digest
from prefect_beluga.core.runnable import Runnable, RunnableCallable
from prefect_beluga.embeddings.hashing import HashingEmbedder
from prefect_beluga.embeddings.openai import OpenAIEmbedder
from prefect_beluga.llms.config import Config
from prefect_beluga.llms.openai import OpenAIChatModel
from prefect_beluga.orchestration._cache import step_cache_key
from prefect_beluga.rag.steps import GenerationStep, QueryEmbeddingStep, RetrievalStep
from prefect_beluga.schema import Document, HumanMessage
from prefect_beluga.vectorstores.inmemory import InMemoryVectorStore

KEY = "sk-unit-fingerprint-secret-42"


def llm(**changes: object) -> OpenAIChatModel:
    options = {"model_name": "gpt-4o-mini", "api_key": KEY, "base_url": "http://127.0.0.1:9/v1", "temperature": 0.1}
    return OpenAIChatModel(Config(provider="openai", **{**options, **changes}))


def test_canonical_json_sorts_keys_and_dumps_models_by_value():
    a = canonical_json({"b": 1, "a": [Document(page_content="x", metadata={"s": 1})], "m": HumanMessage("hi")})
    b = canonical_json({"m": HumanMessage("hi"), "a": (Document(page_content="x", metadata={"s": 1}),), "b": 1})
    assert a == b
    assert '"page_content":"x"' in a
    assert canonical_json({"a": Document(page_content="x")}) != canonical_json({"a": Document(page_content="y")})


@pytest.mark.parametrize("value", [object(), {1: "int key"}, math.nan, {"x": {1, 2}}, b"bytes"])
def test_values_without_canonical_json_are_refused(value):
    with pytest.raises(NoCanonicalForm):
        canonical_json(value)


def test_secret_digest_is_one_way():
    digest = secret_digest(KEY)
    assert KEY not in digest and digest.startswith("sha256:")
    assert secret_digest(None) == secret_digest("") == ""


@pytest.mark.parametrize(
    "change",
    [{"model_name": "gpt-4o"}, {"temperature": 0.2}, {"max_tokens": 9}, {"options": {"seed": 1}},
     {"base_url": "http://127.0.0.1:10/v1"}, {"api_key": KEY + "x"}],
)
def test_chat_model_key_changes_with_every_setting(change):
    assert llm().cache_key() == llm().cache_key()
    assert llm(**change).cache_key() != llm().cache_key()


def test_no_key_material_in_keys():
    for key in (llm().cache_key(), fingerprint(llm()), step_cache_key("chain 'c'", "s", llm(), {"input": "q"})):
        assert KEY not in key


class LLMStep(Runnable):
    def __init__(self, model: OpenAIChatModel, prompt: str) -> None:
        self.model, self.prompt = model, prompt

    def invoke(self, input, config=None):
        return {}


def test_a_user_step_falls_back_to_class_source_and_held_values():
    assert fingerprint(LLMStep(llm(), "p")) == fingerprint(LLMStep(llm(), "p"))
    assert fingerprint(LLMStep(llm(temperature=0.5), "p")) != fingerprint(LLMStep(llm(), "p"))
    assert fingerprint(LLMStep(llm(api_key="other"), "p")) != fingerprint(LLMStep(llm(), "p"))
    assert fingerprint(LLMStep(llm(), "q")) != fingerprint(LLMStep(llm(), "p"))


def test_functions_by_source_and_captured_settings_not_working_state():
    def make(setting: str, seen: list):
        def step(state):
            seen.append(state)
            return {"out": setting}
        return step

    log: list = []
    same = fingerprint(RunnableCallable(make("a", log)))
    log.append("changed")
    assert fingerprint(RunnableCallable(make("a", log))) == same
    assert fingerprint(RunnableCallable(make("b", log))) != same
    assert fingerprint(RunnableCallable(lambda s: {"x": 1})) != fingerprint(RunnableCallable(lambda s: {"x": 2}))


def test_embedders_and_rag_steps_define_their_keys():
    store = InMemoryVectorStore()
    small = OpenAIEmbedder("text-embedding-3-small", api_key=KEY, base_url="http://127.0.0.1:9/v1")
    other_key = OpenAIEmbedder("text-embedding-3-small", api_key=KEY + "x", base_url="http://127.0.0.1:9/v1")
    assert small.cache_key() != other_key.cache_key()
    assert HashingEmbedder(64).cache_key() != HashingEmbedder(128).cache_key()
    assert QueryEmbeddingStep(small).cache_key() != QueryEmbeddingStep(other_key).cache_key()
    assert RetrievalStep(store, small, 2).cache_key() != RetrievalStep(store, small, 3).cache_key()
    assert GenerationStep(llm()).cache_key() != GenerationStep(llm(temperature=1.0)).cache_key()
    assert GenerationStep(llm()).cache_key() != GenerationStep(llm(), "Only {context}").cache_key()


def test_step_cache_key_depends_on_scope_step_and_input():
    base = step_cache_key("chain 'a'", "s", llm(), {"input": "q"})
    assert base == step_cache_key("chain 'a'", "s", llm(), {"input": "q"})
    assert base != step_cache_key("chain 'b'", "s", llm(), {"input": "q"})
    assert base != step_cache_key("chain 'a'", "t", llm(), {"input": "q"})
    assert base != step_cache_key("chain 'a'", "s", llm(), {"input": "q2"})
