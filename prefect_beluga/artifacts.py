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


ANSWER_PREVIEW = 160
"""Characters of each answer shown in the table; the full answers follow it."""


def answers_markdown(answers: Sequence[Mapping[str, Any]], *, session: str | None = None,
                     memory_store: str | None = None, warning: str | None = None) -> str:
    """The answers as markdown that fits a 1,280 px window: a summary line, two narrow tables, the answers.

    1. A summary line: how many answers, tokens, estimated cost, and the conversation's session
       and memory store when there is one (and `warning`, e.g. that the store was empty).
    2. `# | question | answer (first 160 characters) | sources` — sources as each chunk's path
       relative to the ingested folder with its chunk number (`guide/setup.md #2`).
    3. `# | model | prompt tokens | completion tokens | cost (USD)`.
    4. Each answer in full, under its question.
    """
    rows = [answer_row(a) for a in answers]
    cost = total_cost(answers)
    tokens = sum(r["prompt tokens"] + r["completion tokens"] for r in rows)
    summary = (f"**{len(rows)} answer(s)** · {tokens} tokens · "
               + ("cost unknown (a model's price is not listed)" if cost is None else f"estimated cost ${cost:.6f}"))
    if session is not None:
        summary += f" · session `{session}` in {memory_store or 'this process'}"
    lines = [summary, ""]
    if warning:
        lines += [f"> **Warning:** {warning}", ""]
    lines += ["| # | question | answer | sources |", "| --- | --- | --- | --- |"]
    for number, (answer, row) in enumerate(zip(answers, rows), 1):
        sources = ", ".join(_short(s) for s in answer.get("sources", [])) or "none"
        text = " ".join(str(row["answer"]).split())
        preview = text if len(text) <= ANSWER_PREVIEW else text[: ANSWER_PREVIEW - 1].rstrip() + "…"
        lines.append(f"| {number} | {_cell(row['question'])} | {_cell(preview)} | {_cell(sources)} |")
    lines += ["", "| # | model | prompt tokens | completion tokens | cost (USD) |", "| --- | --- | --- | --- | --- |"]
    for number, row in enumerate(rows, 1):
        lines.append(f"| {number} | {row['model']} | {row['prompt tokens']} | {row['completion tokens']} | {row['cost (USD)']} |")
    for number, row in enumerate(rows, 1):
        lines += ["", f"### {number}. {row['question']}", "", str(row["answer"]), "", f"Sources: {row['sources'] or 'none'}"]
    return "\n".join(lines)


def _short(source: str) -> str:
    """A citation as the table shows it: `guide/setup.md #3`; an absolute path (a chunk ingested
    before paths were kept relative to their folder) shows only its file name."""
    path, _, chunk = source.partition("#")
    if path.startswith("/"):
        path = Path(path).name
    return path + (f" #{chunk}" if chunk else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


async def publish_answers(answers: Sequence[Mapping[str, Any]], *, key: str | None = None,
                          session: str | None = None, memory_store: str | None = None,
                          warning: str | None = None) -> UUID:
    """A markdown artifact (see `answers_markdown`): summary, answers with sources, tokens and cost."""
    cost = total_cost(answers)
    description = f"{len(answers)} answer(s), " + ("cost unknown" if cost is None else f"estimated ${cost:.6f}")
    if session is not None:
        description += f", session {session}"
    markdown = answers_markdown(answers, session=session, memory_store=memory_store, warning=warning)
    return await acreate_markdown_artifact(markdown, key=key, description=description)


__all__ = ["ANSWER_PREVIEW", "answer_row", "answers_markdown", "publish_answers", "total_cost"]
