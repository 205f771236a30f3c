"""Workflows the app tests serve (`python -m prefect_beluga.server --workflow server_fixtures:...`).

The loopback OpenAI server's URL and key come from the app process's environment
(`BELUGA_TEST_OPENAI_URL`, `BELUGA_TEST_OPENAI_KEY`), never from a run's input.
"""

from __future__ import annotations

import os

import pydantic

from prefect_beluga import Orchestrator, llms
from prefect_beluga.agents import Agent
from prefect_beluga.orchestration import await_for_signal
from prefect_beluga.tools import tool


@tool
def lookup_order(order_id: str) -> str:
    """Look an order up.

    Args:
        order_id: The order's id.
    """
    return f"order {order_id}: 2 items, 40.00 EUR, delivered"


@tool(requires_approval=True)
def refund(order_id: str, amount: float) -> str:
    """Refund an order (a human approves first).

    Args:
        order_id: The order's id.
        amount: How much to refund.
    """
    return f"refunded {amount:.2f} EUR on order {order_id}"


def _llm() -> llms.OpenAIChatModel:
    return llms.OpenAIChatModel(llms.Config(
        model_name="gpt-4o-mini",
        api_key=os.environ["BELUGA_TEST_OPENAI_KEY"],
        base_url=os.environ["BELUGA_TEST_OPENAI_URL"],
    ))


async def support_job(input: dict) -> dict:
    agent = Agent(_llm(), tools=[lookup_order, refund], name="support-agent",
                  system_prompt="You help with orders.")
    result = await agent.ainvoke({"input": input["input"]})
    return {"output": result["output"]}


async def echo_job(input: dict) -> dict:
    return {"echo": input}


async def gate_job(input: dict) -> dict:
    payload = await await_for_signal("go", poll_interval=0.5)
    return {"got": payload}


class Question(pydantic.BaseModel):
    question: str
    max_words: int = 50


support = Orchestrator().create_workflow(support_job, workflow_id="support")
echo = Orchestrator().create_workflow(echo_job, workflow_id="echo")
gate = Orchestrator().create_workflow(gate_job, workflow_id="gate")
