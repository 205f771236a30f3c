"""Workflows of the client-outage tests (module level, so workers load them from this file).

`held` records a `started <n> <pid>` line in the input's `log`, then holds until the input's
`gate` file exists (so a run is Running, doing nothing the API must answer, while the test takes
the API down); `spoken` streams text before and after such a gate; `placed` reports the process
that ran it (the deployment tests check where a run ran).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect_beluga import Chain, Orchestrator
from prefect_beluga.core.streaming import emit_token

orchestrator = Orchestrator()

#: What `spoken` streams before and after its gate, chunk by chunk.
BEFORE = ["The ", "server ", "is ", "up. "]
AFTER = ["It ", "came ", "back, ", "nothing ", "twice."]


def _wait(gate: str | None) -> None:
    while gate and not Path(gate).exists():
        time.sleep(0.1)


def hold(state: dict) -> dict:
    with open(state["log"], "a") as f:
        f.write(f"started {state['n']} {os.getpid()}\n")
    _wait(state.get("gate"))
    return {"n": state["n"], "pid": os.getpid(), "worker": os.environ.get("BELUGA_TEST_WORKER")}


held = orchestrator.create_workflow(hold, workflow_id="outage-held")


def before(state: dict) -> dict:
    for chunk in BEFORE:
        emit_token(chunk)
        time.sleep(0.15)  # apart: one event each (a node emits at most ~10 a second)
    return {}


def gate(state: dict) -> dict:
    _wait(state["gate"])
    return {}


def after(state: dict) -> dict:
    for chunk in AFTER:
        emit_token(chunk)
        time.sleep(0.15)
    return {"said": "".join(BEFORE + AFTER)}


spoken = orchestrator.create_workflow(Chain([before, gate, after], name="spoken"), workflow_id="outage-spoken")


def place(state: dict) -> dict:
    return {"pid": os.getpid(), "worker": os.environ.get("BELUGA_TEST_WORKER")}


placed = orchestrator.create_workflow(place, workflow_id="outage-placed")
