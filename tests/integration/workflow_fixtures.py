"""Workflows used by tests/integration/test_workflow*.py, at module level so workers can load them.

Steps record each execution by appending a line to the file named in the input (`log`), so a
test can count how often each step really ran.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from prefect import flow

from prefect_beluga import Chain, Orchestrator, publish, wait_for_signal

orchestrator = Orchestrator()


def record(state: dict, line: str) -> None:
    if state.get("log"):
        with open(state["log"], "a") as f:
            f.write(line + "\n")


def add(state: dict) -> dict:
    record(state, f"add {os.getpid()}")
    return {
        "sum": state["a"] + state["b"],
        "pid": os.getpid(),
        "worker": os.environ.get("BELUGA_TEST_WORKER", socket.gethostname()),
    }


adder = orchestrator.create_workflow(add, workflow_id="test-adder")


def fail(state: dict) -> dict:
    raise KeyError(f"no such thing: {state.get('what')}")


failing = orchestrator.create_workflow(fail, workflow_id="test-failing")


async def slow(state: dict) -> dict:
    import asyncio

    await asyncio.sleep(state.get("seconds", 30))
    return {"slept": True}


sleeper = orchestrator.create_workflow(slow, workflow_id="test-sleeper")


def step1(state: dict) -> dict:
    record(state, "step1")
    return {"x": state["n"] + 1}


def step2(state: dict) -> dict:
    record(state, "step2")
    return {"x": state["x"] * 10}


def step3(state: dict) -> dict:
    record(state, f"step3 {os.getpid()}")
    gate = Path(state["gate"]) if state.get("gate") else None
    while gate is not None and not gate.exists():  # first attempt: wait here to be killed
        time.sleep(0.1)
    return {"x": state["x"] + 3}


durable_chain = Chain([step1, step2, step3], name="durable-chain")
durable = orchestrator.create_workflow(durable_chain, workflow_id="test-durable")


def review(state: dict) -> dict:
    publish(stage="drafted", words=len(state["text"].split()))
    verdict = wait_for_signal("approval", timeout=120)
    publish(stage="reviewed")
    return {"approved": bool(verdict["ok"]), "by": verdict.get("by")}


reviewer = orchestrator.create_workflow(review, workflow_id="test-reviewer")


@flow
def multiply(x: int, y: int) -> int:
    return x * y


multiplier = orchestrator.create_workflow(multiply, workflow_id="test-multiplier")


def add_slowly(state: dict) -> dict:
    time.sleep(state.get("seconds", 0))
    return add(state)


spread = orchestrator.create_workflow(add_slowly, workflow_id="test-spread")


def collect(state: dict) -> dict:
    """Waits for the signals named in `names`, in that order; a `gate` file holds it back first."""
    gate = Path(state["gate"]) if state.get("gate") else None
    while gate is not None and not gate.exists():
        time.sleep(0.1)
    got = []
    for name in state["names"]:
        got.append(wait_for_signal(name, timeout=300, poll_interval=0.2))
        record(state, f"got {name} {got[-1]} {os.getpid()}")
    return {"got": got}


collector = orchestrator.create_workflow(collect, workflow_id="test-collector")


async def acollect(state: dict) -> dict:
    from prefect_beluga.orchestration import await_for_signal

    return {"got": [await await_for_signal(name, timeout=300, poll_interval=0.2) for name in state["names"]]}


acollector = orchestrator.create_workflow(acollect, workflow_id="test-acollector")


def subprocess_env() -> dict[str, str]:
    """Environment for a child process on this session's Prefect API and result storage."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH

    env = dict(os.environ)
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    env["PREFECT_LOCAL_STORAGE_PATH"] = str(PREFECT_LOCAL_STORAGE_PATH.value())
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return env


def start_worker(server, pool: str, name: str, folder: Path, *, limit: int = 1, **env_more: str):
    """A `prefect worker` process (its own process group) of the process pool `pool`, running at
    most `limit` flow runs at once."""
    import subprocess

    from prefect_beluga.testing.prefect_server import prefect_executable

    env = dict(server.env)
    env.update(
        BELUGA_TEST_WORKER=name,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")]),
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
        **env_more,
    )
    log = open(folder / f"{name}.log", "wb")
    return subprocess.Popen(
        [prefect_executable(), "worker", "start", "--pool", pool, "--name", name, "--type", "process",
         "--limit", str(limit)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(process) -> None:
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(15)


async def nap(state: dict) -> dict:
    """Writes its flow run id to `ready`, then sleeps (to be stopped)."""
    import asyncio

    from prefect.context import FlowRunContext

    Path(state["ready"]).write_text(str(FlowRunContext.get().flow_run.id))
    await asyncio.sleep(state.get("seconds", 120))
    return {}


napper = orchestrator.create_workflow(nap, workflow_id="test-napper")
