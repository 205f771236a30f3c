"""Prompt control: `cancel` / `terminate` of a run paused in `wait_for_signal`, from the process
that runs it, return within the wait's poll interval plus 1 s (issue 25, item 6; they took 10.1 s),
and the run ends Cancelled / Terminated as before (docs/workflows.md, "Signals")."""

from __future__ import annotations

import time

import pytest

from prefect_beluga import Orchestrator, WorkflowCancelled, await_for_signal, wait_for_signal
from prefect_beluga.orchestration.workflow._background import runner
from prefect_beluga.testing.helpers import eventually

POLL = 1.0  # wait_for_signal's default poll interval
BOUND = POLL + 1.0  # the bound, seconds

orchestrator = Orchestrator()


def wait_sync(state: dict) -> dict:
    return {"got": wait_for_signal("go")}


async def wait_async(state: dict) -> dict:
    return {"got": await await_for_signal("go")}


waiters = {
    "sync": orchestrator.create_workflow(wait_sync, workflow_id="test-cancel-paused-sync"),
    "async": orchestrator.create_workflow(wait_async, workflow_id="test-cancel-paused-async"),
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("how", ["cancel", "terminate"])
def test_stopping_a_paused_run_of_this_process_returns_within_the_poll_interval(kind, how):
    workflow = waiters[kind]
    workflow_id, run_id = workflow.execute({})
    eventually(lambda: workflow.status(run_id) == "PAUSED", "the run to pause", interval=0.05)

    started = time.perf_counter()
    if how == "cancel":
        workflow.cancel(run_id)
    else:
        workflow.terminate(run_id, "operator said stop")
    took = time.perf_counter() - started
    print(f"{how} of a paused {kind} run returned after {took:.3f}s")
    assert took < BOUND, f"{how} of a paused {kind} run took {took:.2f}s"

    # It returned with the run ended (its runner is done with it): Cancelled, as before
    # (Terminated, with the reason).
    assert all(str(r) != run_id for r in runner().runs)
    [run] = [r for r in workflow.list_runs() if r.run_id == run_id]
    assert run.status == "CANCELLED"
    if how == "terminate":
        assert run.state_name == "Terminated"
    with pytest.raises(WorkflowCancelled, match="operator said stop" if how == "terminate" else "cancelled"):
        workflow.get_result(workflow_id, run_id, timeout=10)
