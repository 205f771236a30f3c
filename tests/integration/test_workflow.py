"""Workflows on the session's Prefect API: execute/get_result, idempotency, errors, operations,
signals and queries, reading results from another process, and durability after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import workflow_fixtures as fx

from prefect_beluga import (
    Chain,
    Graph,
    Orchestrator,
    UnknownWorkflowRun,
    ValidationError,
    Workflow,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowNotDeployed,
    WorkflowTimeout,
)
from prefect_beluga.testing.helpers import eventually, reaped

subprocess_env = fx.subprocess_env


def test_execute_returns_at_once_and_get_result_waits():
    workflow_id, run_id = fx.sleeper.execute({"seconds": 1.5})
    started = time.monotonic()
    assert workflow_id == "test-sleeper"
    assert fx.sleeper.status(run_id) in {"SCHEDULED", "PENDING", "RUNNING"}
    assert fx.sleeper.get_result(workflow_id, run_id, timeout=60) == {"slept": True}
    assert time.monotonic() - started >= 1.0
    assert fx.sleeper.status(run_id) == "COMPLETED"


def test_every_kind_of_fn_runs_as_a_workflow():
    orchestrator = Orchestrator()

    async def shout(state):
        return {"output": state["input"].upper()}

    graph = Graph()
    graph.add_node("a", lambda s: {"a": s["input"] + "!"})
    graph.add_node("b", lambda s: {"b": len(s["a"])})
    graph.add_edge("a", "b")
    graph.set_entry_point("a")
    graph.set_finish_point("b")
    cases = [
        (orchestrator.create_workflow(shout, workflow_id="wf-async"), "hi", {"output": "HI"}),
        (
            orchestrator.create_workflow(Chain([shout], name="c"), workflow_id="wf-chain"),
            "hi",
            {"input": "hi", "output": "HI"},
        ),
        (orchestrator.create_workflow(graph, workflow_id="wf-graph"), "hi", {"input": "hi", "a": "hi!", "b": 3}),
        (fx.adder, {"a": 2, "b": 5}, None),
        (fx.multiplier, {"x": 6, "y": 7}, 42),
    ]
    runs = [(wf, wf.execute(value), expected) for wf, value, expected in cases]
    for wf, (workflow_id, run_id), expected in runs:
        result = wf.get_result(workflow_id, run_id, timeout=60)
        if expected is None:
            assert result["sum"] == 7
        else:
            assert result == expected


def test_same_idempotency_key_never_creates_a_second_run(tmp_path):
    log = tmp_path / "log"
    key = f"key-{time.time_ns()}"
    first = fx.adder.execute({"a": 1, "b": 1, "log": str(log)}, idempotency_key=key)
    second = fx.adder.execute({"a": 1, "b": 1, "log": str(log)}, idempotency_key=key)
    assert first == second
    assert fx.adder.get_result(*first, timeout=60)["sum"] == 2
    third = fx.adder.execute({"a": 1, "b": 1, "log": str(log)}, idempotency_key=key)
    assert third == first
    assert log.read_text().count("add") == 1
    runs = [r for r in fx.adder.list_runs() if r.idempotency_key == key]
    assert [r.run_id for r in runs] == [first[1]]
    other = fx.adder.execute({"a": 1, "b": 1}, idempotency_key=key + "-other")
    assert other[1] != first[1]


def test_failed_run_raises_workflow_failed_with_the_cause():
    workflow_id, run_id = fx.failing.execute({"what": "widget"})
    with pytest.raises(WorkflowFailed, match="widget") as info:
        fx.failing.get_result(workflow_id, run_id, timeout=60)
    assert isinstance(info.value.cause, KeyError)
    assert info.value.__cause__ is info.value.cause
    assert info.value.run_id == run_id
    assert fx.failing.status(run_id) == "FAILED"


def test_unknown_runs_and_workflows_are_clear_errors():
    workflow_id, run_id = fx.adder.execute({"a": 0, "b": 0})
    with pytest.raises(UnknownWorkflowRun, match="unknown workflow 'nope'"):
        fx.adder.get_result("nope", run_id)
    with pytest.raises(UnknownWorkflowRun, match="no run '00000000-0000-0000-0000-000000000000'"):
        fx.adder.get_result(workflow_id, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(UnknownWorkflowRun, match="no run 'garbage'"):
        fx.adder.status("garbage")
    with pytest.raises(UnknownWorkflowRun, match="not of workflow 'test-failing'"):
        fx.failing.get_result("test-failing", run_id)
    for operation in (fx.adder.cancel, fx.adder.query, fx.adder.retry):
        with pytest.raises(UnknownWorkflowRun):
            operation("11111111-1111-1111-1111-111111111111")
    assert isinstance(UnknownWorkflowRun("x"), LookupError)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValidationError, match=r"JSON-serialisable.*key 'when' holds a object"):
        fx.adder.execute({"a": 1, "when": object()})
    with pytest.raises(ValidationError, match="input must be a dict"):
        fx.adder.execute([1, 2])
    with pytest.raises(ValidationError, match="idempotency_key"):
        fx.adder.execute({"a": 1}, idempotency_key="")
    with pytest.raises(ValidationError, match="workflow_id"):
        Workflow(fx.add, workflow_id="a/b")
    with pytest.raises(ValidationError, match="retries"):
        Workflow(fx.add, workflow_id="x", retries=-1)
    with pytest.raises(ValidationError, match="timeout"):
        Workflow(fx.add, workflow_id="x", timeout=0)
    with pytest.raises(ValidationError, match="expected a callable|workflow"):
        Workflow(42, workflow_id="x")


def test_distributed_workflow_without_deployment_is_a_clear_error():
    wf = Orchestrator().create_workflow(fx.add, workflow_id="test-never-deployed", distributed=True)
    with pytest.raises(WorkflowNotDeployed, match="no deployment 'test-never-deployed'.*deploy"):
        wf.execute({"a": 1, "b": 2})
    assert wf.list_runs() == []
    with pytest.raises(ValidationError, match="module-level name"):
        wf.deploy(work_pool="anything")


def test_get_result_timeout_then_cancel():
    workflow_id, run_id = fx.sleeper.execute({"seconds": 60})
    with pytest.raises(WorkflowTimeout, match="not finished after 0.5s"):
        fx.sleeper.get_result(workflow_id, run_id, timeout=0.5)
    eventually(lambda: fx.sleeper.status(run_id) == "RUNNING", "the run to start", timeout=30, interval=0.1)
    fx.sleeper.cancel(run_id)
    with pytest.raises(WorkflowCancelled, match="cancelled"):
        fx.sleeper.get_result(workflow_id, run_id, timeout=30)
    assert fx.sleeper.status(run_id) == "CANCELLED"


def test_cancel_before_it_starts_and_terminate_with_a_reason():
    workflow_id, run_id = fx.sleeper.execute({"seconds": 60})
    fx.sleeper.terminate(run_id, "operator said stop")
    with pytest.raises(WorkflowCancelled, match="terminated: operator said stop"):
        fx.sleeper.get_result(workflow_id, run_id, timeout=30)
    [run] = [r for r in fx.sleeper.list_runs() if r.run_id == run_id]
    assert (run.status, run.state_name) == ("CANCELLED", "Terminated")
    fx.sleeper.terminate(run_id, "again")  # already over: nothing happens


def test_signal_resumes_a_waiting_run_and_query_reads_its_progress():
    workflow_id, run_id = fx.reviewer.execute({"text": "three short words"})
    eventually(lambda: fx.reviewer.status(run_id) == "PAUSED", "the run to pause for its signal")
    assert fx.reviewer.query(run_id) == {"stage": "drafted", "words": 3}
    with pytest.raises(ValidationError, match="JSON-serialisable"):
        fx.reviewer.signal(run_id, "approval", {"ok": object()})
    fx.reviewer.signal(run_id, "other", {})  # recorded at once, though the run never reads it
    fx.reviewer.signal(run_id, "approval", {"ok": True, "by": "ann"})
    assert fx.reviewer.get_result(workflow_id, run_id, timeout=60) == {"approved": True, "by": "ann"}
    assert fx.reviewer.query(run_id) == {"stage": "reviewed", "words": 3}
    with pytest.raises(Exception, match="already ended Completed"):
        fx.reviewer.signal(run_id, "approval", {"ok": False})


def test_get_result_from_another_process():
    workflow_id, run_id = fx.adder.execute({"a": 20, "b": 22})
    code = (
        "import workflow_fixtures as fx, sys\n"
        f"print(fx.adder.get_result({workflow_id!r}, {run_id!r}, timeout=60)['sum'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "42"


def test_killed_run_is_retried_without_recomputing_finished_steps(tmp_path):
    """A process runs the workflow and is SIGKILLed in step 3; retrying finishes the same run,
    reading steps 1 and 2 back from their persisted results."""
    log, gate = tmp_path / "steps.log", tmp_path / "gate"
    code = (
        "import workflow_fixtures as fx, sys, time\n"
        f"wid, rid = fx.durable.execute({{'n': 4, 'log': {str(log)!r}, 'gate': {str(gate)!r}}})\n"
        "print(rid, flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=subprocess_env(), stdout=subprocess.PIPE, text=True
    )
    with reaped(child):
        run_id = child.stdout.readline().strip()
        eventually(lambda: log.exists() and "step3" in log.read_text(), "step 3 to start", timeout=90, process=child)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert fx.durable.status(run_id) == "RUNNING"  # nobody is left to say otherwise
    gate.touch()
    assert fx.durable.retry(run_id) == ("test-durable", run_id)
    result = fx.durable.get_result("test-durable", run_id, timeout=90)
    assert result["x"] == (4 + 1) * 10 + 3
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["step1", "step2", "step3", "step3"]
    assert lines[2].split()[1] == str(child.pid) and lines[3].split()[1] == str(os.getpid())
