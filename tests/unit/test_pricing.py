"""Cost estimates: known list prices, dated snapshots, and no guess for unknown models."""

from __future__ import annotations

import pytest

from prefect_beluga.artifacts import answer_row, total_cost
from prefect_beluga.llms import estimate_cost
from prefect_beluga.schema import Usage


def test_known_models_are_priced_per_million_tokens():
    assert estimate_cost("gpt-4o-mini", Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)) == pytest.approx(
        0.75
    )
    assert estimate_cost("gpt-4o-mini-2024-07-18", {"prompt_tokens": 2000}) == pytest.approx(0.0003)
    assert estimate_cost("gpt-4o", {"completion_tokens": 1000}) == pytest.approx(0.01)  # not gpt-4o-mini's price
    assert estimate_cost("offline-extractive", {"prompt_tokens": 10**6}) == 0.0


def test_unknown_models_have_no_estimate():
    assert estimate_cost("my-local-llama", {"prompt_tokens": 10}) is None
    assert estimate_cost("gpt-4o-minimal", {"prompt_tokens": 10}) is None
    answer = {
        "question": "q",
        "output": "a",
        "sources": ["x.md#0"],
        "model": "my-local-llama",
        "usage": {"prompt_tokens": 3},
    }
    assert answer_row(answer)["cost (USD)"] == "unknown price"
    assert total_cost([answer]) is None


def test_answer_row():
    row = answer_row(
        {
            "input": "q",
            "output": "a",
            "sources": ["x.md#0", "y.md#1"],
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
        }
    )
    assert row == {
        "question": "q",
        "answer": "a",
        "sources": "x.md#0, y.md#1",
        "model": "gpt-4o-mini",
        "prompt tokens": 1000,
        "completion tokens": 100,
        "cost (USD)": "0.000210",
    }


def test_providers_have_their_own_tables_and_self_hosted_servers_are_unpriced():
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}
    assert estimate_cost("llama-3.3-70b-versatile", usage, provider="groq") == pytest.approx(1.38)
    assert estimate_cost("gemini-2.5-flash", usage, provider="gemini") == pytest.approx(2.80)
    assert estimate_cost("claude-sonnet-4-5-20250929", usage, provider="anthropic") == pytest.approx(18.0)
    assert estimate_cost("claude-sonnet-4-5-20250929", usage) == pytest.approx(18.0)  # found without a provider
    # Azure replies name the deployment's model, priced as OpenAI's.
    assert estimate_cost("gpt-4o-mini-2024-07-18", usage, provider="azure_openai") == pytest.approx(0.75)
    for provider in ("ollama", "vllm", "compatible", "no-such-provider"):
        assert estimate_cost("llama-3.3-70b-versatile", usage, provider=provider) is None  # unpriced, never 0
    assert estimate_cost("gpt-4o-mini", usage, provider="groq") is None
