"""A workflow around a graph, for the crash-and-resume test (imported by its subprocesses).

    plan -> (left, right) -> join

Every node asks the loopback OpenAI server named in the input (`base_url`) one question naming
the node, and appends "<node> <pid>" to the file `log` when it starts; `join` then waits for the
file `gate` to exist before asking, so a test can SIGKILL the process while `join` runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect_beluga import Graph, Orchestrator, llms
from prefect_beluga.llms import OpenAIChatModel


def ask(state: dict, node: str, question: str) -> str:
    model = OpenAIChatModel(
        llms.Config(model_name="gpt-4o-mini", api_key="sk-test", base_url=state["base_url"], timeout=5)
    )
    return model.generate(f"[{node}] {question}").content


def record(state: dict, node: str) -> None:
    with open(state["log"], "a") as f:
        f.write(f"{node} {os.getpid()}\n")


def plan(state: dict) -> dict:
    record(state, "plan")
    return {"plan": ask(state, "plan", state["topic"])}


def left(state: dict) -> dict:
    record(state, "left")
    return {"left": ask(state, "left", state["plan"])}


def right(state: dict) -> dict:
    record(state, "right")
    return {"right": ask(state, "right", state["plan"])}


def join(state: dict) -> dict:
    record(state, "join")
    gate = Path(state["gate"])
    while not gate.exists():  # the first attempt waits here to be killed
        time.sleep(0.05)
    return {"answer": ask(state, "join", f"{state['left']} + {state['right']}")}


graph = Graph(name="crash-graph")
graph.add_node("plan", plan).add_node("left", left).add_node("right", right).add_node("join", join)
graph.add_edge("plan", "left").add_edge("plan", "right").add_edge("left", "join").add_edge("right", "join")
graph.set_entry_point(["plan"]).set_finish_point(["join"])

workflow = Orchestrator().create_workflow(graph, workflow_id="reliability-crash-graph")
