"""Prefect artifacts for RAG runs: answers with their sources, token usage and cost.

Called inside a flow or task run, each function attaches an artifact to that run; with a `key`
the artifact also appears, versioned, on the UI's Artifacts page.

Examples:
    >>> answer = rag_chain.invoke("What is Prefect?")
    >>> await publish_answers([{"question": "What is Prefect?", **answer}], key="rag-answers")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from prefect.artifacts import acreate_table_artifact

from prefect_beluga.llms.pricing import estimate_cost
from prefect_beluga.schema import Usage


def answer_row(answer: Mapping[str, Any]) -> dict[str, Any]:
    """One table row for a RAG answer (`question`, `output`, `sources`, `model`, `usage`)."""
    usage = Usage(**answer.get("usage", {}))
    model = str(answer.get("model", ""))
    cost = estimate_cost(model, usage)
    return {
        "question": answer.get("question", answer.get("input", "")),
        "answer": answer.get("output", ""),
        "sources": ", ".join(answer.get("sources", [])),
        "model": model,
        "prompt tokens": usage.prompt_tokens,
        "completion tokens": usage.completion_tokens,
        "cost (USD)": "unknown price" if cost is None else f"{cost:.6f}",
    }


def total_cost(answers: Sequence[Mapping[str, Any]]) -> float | None:
    """The summed cost of `answers`, or None when any model's price is unknown."""
    costs = [estimate_cost(str(a.get("model", "")), a.get("usage", {})) for a in answers]
    return None if any(c is None for c in costs) else sum(costs)


async def publish_answers(answers: Sequence[Mapping[str, Any]], *, key: str | None = None) -> UUID:
    """A table artifact: one row per answer with its sources, token usage and estimated cost."""
    rows = [answer_row(a) for a in answers]
    cost = total_cost(answers)
    tokens = sum(Usage(**a.get("usage", {})).total_tokens for a in answers)
    summary = f"{len(rows)} answer(s), {tokens} tokens, " + (
        "cost unknown (a model's price is not listed)" if cost is None else f"estimated ${cost:.6f}"
    )
    return await acreate_table_artifact(rows, key=key, description=summary)


__all__ = ["answer_row", "publish_answers", "total_cost"]
