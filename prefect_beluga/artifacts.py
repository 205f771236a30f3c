"""Prefect artifacts for RAG runs: answers with their sources, token usage and cost.

Called inside a flow or task run, each function attaches an artifact to that run; with a `key`
the artifact also appears, versioned, on the UI's Artifacts page.

Examples:
    >>> answer = rag_chain.invoke("What is Prefect?")
    >>> await publish_answers([{"question": "What is Prefect?", **answer}], key="rag-answers")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import acreate_markdown_artifact

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


def answers_markdown(answers: Sequence[Mapping[str, Any]]) -> str:
    """A summary table (question, sources, tokens, cost) and then each answer in full.

    Answers are long: in one table they would push the sources and costs out of view.
    """
    rows = [answer_row(a) for a in answers]
    cost = total_cost(answers)
    tokens = sum(r["prompt tokens"] + r["completion tokens"] for r in rows)
    lines = [
        f"**{len(rows)} answer(s)**, {tokens} tokens, "
        + ("cost unknown (a model's price is not listed)" if cost is None else f"estimated cost ${cost:.6f}"),
        "",
        "| # | question | sources | model | tokens (prompt + completion) | cost (USD) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for number, (answer, row) in enumerate(zip(answers, rows), 1):
        sources = ", ".join(_short(s) for s in answer.get("sources", []))
        lines.append(
            f"| {number} | {_cell(row['question'])} | {_cell(sources)} | {row['model']} | "
            f"{row['prompt tokens']} + {row['completion tokens']} | {row['cost (USD)']} |"
        )
    for number, row in enumerate(rows, 1):
        lines += ["", f"### {number}. {row['question']}", "", str(row["answer"]), "", f"Sources: {row['sources'] or 'none'}"]
    return "\n".join(lines)


def _short(source: str) -> str:
    """`/long/path/doc.md#3` as `doc.md#3`."""
    path, _, chunk = source.partition("#")
    return Path(path).name + (f"#{chunk}" if chunk else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


async def publish_answers(answers: Sequence[Mapping[str, Any]], *, key: str | None = None) -> UUID:
    """A markdown artifact: a table of the answers' sources, tokens and cost, then the answers."""
    cost = total_cost(answers)
    description = f"{len(answers)} answer(s), " + ("cost unknown" if cost is None else f"estimated ${cost:.6f}")
    return await acreate_markdown_artifact(answers_markdown(answers), key=key, description=description)


__all__ = ["answer_row", "answers_markdown", "publish_answers", "total_cost"]
