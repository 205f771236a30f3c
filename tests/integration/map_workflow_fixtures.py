"""A workflow whose chain has a Map step, at module level so another process can run it.

Each item appends "<index> <pid>" to the file named in the input (`log`); item 3 waits for the
file `gate` to exist (its first attempt waits there to be killed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect_beluga import Chain, Map, Orchestrator


def label(state: dict) -> dict:
    index = state["index"]
    if index == 3:
        gate = Path(state["gate"])
        while not gate.exists():
            time.sleep(0.05)
    with open(state["log"], "a") as f:
        f.write(f"{index} {os.getpid()}\n")
    return {"label": f"item-{state['item']}"}


map_chain = Chain(
    [lambda s: {"items": list(range(s["n"]))}, Map(label, over="items", name="label"),
     lambda s: {"labels": [o["label"] for o in s["label"]]}],
    name="durable-map",
)
durable_map = Orchestrator().create_workflow(map_chain, workflow_id="test-durable-map")
