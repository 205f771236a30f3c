"""Prefect artifacts for RAG runs: answers with their sources, token usage and cost.

Called inside a flow or task run, `publish_answers` attaches a markdown artifact to that run;
with a `key` the artifact also appears, versioned, on the UI's Artifacts page. The markdown is
`answers_markdown`'s: a summary line, a short table, then each answer with its sources.

Examples:
    ```python
    from prefect_beluga.artifacts import answers_markdown

    answer = {"question": "What is Prefect?", "output": "A workflow engine.", "model": "offline",
              "sources": ["guide.md#0"], "usage": {"prompt_tokens": 12, "completion_tokens": 4}}
    markdown = answers_markdown([answer])
    assert markdown.startswith("**1 answer(s)** · 16 tokens")
    # in a flow run: await publish_answers([answer], key="rag-answers")
    ```

The public names of `orchestration/_artifacts.py`, where the Prefect code lives.
"""

from prefect_beluga.orchestration._artifacts import (
    QUESTION_PREVIEW,
    answer_row,
    answers_markdown,
    publish_answers,
    total_cost,
)

__all__ = ["QUESTION_PREVIEW", "answer_row", "answers_markdown", "publish_answers", "total_cost"]
