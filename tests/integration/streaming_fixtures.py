"""A workflow with a chat model, importable by a `prefect worker` (test_streaming deploys it).

The loopback OpenAI server's URL and key come from the environment of the process running it.
"""

from __future__ import annotations

import os

from prefect_beluga import Chain, Orchestrator, Runnable
from prefect_beluga.llms import Config
from prefect_beluga.llms.openai import OpenAIChatModel


class Answer(Runnable):
    name = "answer"

    def invoke(self, input: dict, config=None) -> dict:
        llm = OpenAIChatModel(Config(api_key=os.environ["BELUGA_TEST_OPENAI_KEY"],
                                     base_url=os.environ["BELUGA_TEST_OPENAI_URL"]))
        return {"answer": llm.generate(input["input"]).content}


deployed_stream = Orchestrator().create_workflow(Chain([Answer()], name="deployed-stream"),
                                                 workflow_id="test-deployed-stream")
