"""The workflow `benchmarks/app_streaming.py` serves: one step whose chat model streams its answer.

The loopback OpenAI server's URL and key come from the environment (`BELUGA_BENCH_OPENAI_URL`,
`BELUGA_BENCH_OPENAI_KEY`), read when the step runs, so the app process and the benchmark
process build the same workflow.
"""

from __future__ import annotations

import os
from typing import Any

from prefect_beluga import Chain, Orchestrator, Runnable
from prefect_beluga.llms import Config
from prefect_beluga.llms.openai import OpenAIChatModel


class Answer(Runnable):
    name = "answer"

    async def ainvoke(self, input: Any, config: Any = None) -> dict[str, Any]:
        llm = OpenAIChatModel(Config(api_key=os.environ["BELUGA_BENCH_OPENAI_KEY"],
                                     base_url=os.environ["BELUGA_BENCH_OPENAI_URL"]))
        return {"output": (await llm.agenerate(input["input"])).content}


answer = Orchestrator().create_workflow(Chain([Answer()], name="bench-answer"), workflow_id="bench-answer")
