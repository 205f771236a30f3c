"""RAG answers as a Prefect markdown artifact: table rows, cost, the markdown, and publishing it.

Public as `prefect_beluga.artifacts`.
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


QUESTION_PREVIEW = 40
"""Characters of each question shown in the table (the UI does not wrap table cells)."""


def answers_markdown(answers: Sequence[Mapping[str, Any]], *, session: str | None = None,
                     memory_store: str | None = None, warning: str | None = None) -> str:
    """The answers as markdown that reads in a 1,280 px window (checked in the Prefect UI).

    The UI's tables do not wrap their cells and the artifact pane is ~700 px wide at 1,280 px,
    so only short values go in the table; answers and sources go below it, where text wraps:

    1. A summary line: answers, tokens, estimated cost, and the conversation's session and
       memory store when there is one (then `warning`, e.g. that the store was empty).
    2. `# | question | model | tokens in + out | cost (USD)` — questions cut to 40 characters.
    3. Per answer: the question as a heading, the answer in full, and its sources as a list of
       paths relative to the ingested folder with their chunk number (`guide/setup.md` chunk 2).
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
    lines += ["| # | question | model | tokens in + out | cost (USD) |", "| --- | --- | --- | --- | --- |"]
    for number, row in enumerate(rows, 1):
        question = " ".join(str(row["question"]).split())
        if len(question) > QUESTION_PREVIEW:
            question = question[: QUESTION_PREVIEW - 1].rstrip() + "…"
        lines.append(f"| {number} | {_cell(question)} | {row['model']} | "
                     f"{row['prompt tokens']} + {row['completion tokens']} | {row['cost (USD)']} |")
    for number, (answer, row) in enumerate(zip(answers, rows, strict=True), 1):
        lines += ["", f"### {number}. {row['question']}", "", str(row["answer"]), "", "**Sources**", ""]
        lines += [f"- {_short(s)}" for s in answer.get("sources", [])] or ["- none"]
    return "\n".join(lines)


def _short(source: str) -> str:
    """A citation as the artifact shows it: `` `guide/setup.md` chunk 3``; an absolute path (a chunk
    ingested before paths were kept relative to their folder) shows only its file name."""
    path, _, chunk = source.partition("#")
    if path.startswith("/"):
        path = Path(path).name
    return f"`{path}`" + (f" chunk {chunk}" if chunk else "")


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


__all__ = ["QUESTION_PREVIEW", "answer_row", "answers_markdown", "publish_answers", "total_cost"]
