"""Worker loss on a real `prefect server`: a deployed run whose worker is SIGKILLed is resumed by
another worker with no manual action, and its state history says what happened."""

from __future__ import annotations

import os
import signal
import time

import workflow_fixtures as fx

from prefect_beluga.core._sync import run_sync
from prefect_beluga.testing.helpers import create_process_pool, eventually, reaped
from prefect_beluga.testing.prefect_server import PrefectServer


async def _state_messages(run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [state.message or "" for state in await client.read_flow_run_states(run_id)]


def test_a_run_whose_worker_is_killed_is_resumed_by_another_worker_by_itself(prefect_server: PrefectServer, tmp_path):
    pool, log, gate = "beluga-lost-pool", tmp_path / "steps.log", tmp_path / "gate"
    beat = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    workers = []
    with prefect_server.settings():
        run_sync(create_process_pool(pool))
        fx.durable.deploy(work_pool=pool, lost_after=45)
        try:
            workers.append(fx.start_worker(prefect_server, pool, "doomed", tmp_path, **beat))
            _, run_id = fx.durable.execute({"n": 4, "log": str(log), "gate": str(gate)})

            def step3_started() -> bool:
                doomed = tmp_path / "doomed.log"
                assert log.exists() and "step3" in log.read_text(), (
                    doomed.read_text(errors="replace")[-3000:] if doomed.exists() else ""
                )
                return True

            eventually(step3_started, "step 3 to start on the doomed worker", timeout=180)
            workers.append(fx.start_worker(prefect_server, pool, "rescuer", tmp_path, **beat))
            flow_run_pid = int(log.read_text().splitlines()[-1].split()[1])
            os.kill(flow_run_pid, signal.SIGKILL)
            fx.kill_group(workers[0])
            gate.touch()
            # No retry, no manual action: the automation reschedules it, the rescuer runs it.
            result = fx.durable.get_result("test-durable", run_id, timeout=300)
        finally:
            for worker in workers:
                fx.kill_group(worker)
        messages = run_sync(_state_messages(run_id))
    logs = {p.name: p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log")}
    assert result["x"] == (4 + 1) * 10 + 3, logs
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["step1", "step2", "step3", "step3"]  # 1 and 2 read back
    assert lines[2].split()[1] == str(flow_run_pid) != lines[3].split()[1]
    assert any("The process running this flow run died (worker lost?)" in m for m in messages), messages


async def _run_logs(run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs]


def test_a_run_stopped_with_its_process_says_so_in_an_operators_words(tmp_path):
    """The engine catches SIGTERM (a worker shutting down) and records Crashed; the workflow's
    on_crashed hook logs on the run what happened and how to finish it."""
    import subprocess
    import sys

    ready = tmp_path / "ready"
    code = f"import asyncio, workflow_fixtures as fx\nasyncio.run(fx.napper.flow({{'ready': {str(ready)!r}}}))\n"
    child = subprocess.Popen([sys.executable, "-c", code], env=fx.subprocess_env(), stderr=subprocess.PIPE, text=True)
    with reaped(child):
        eventually(ready.exists, "the flow run to be ready", timeout=90, interval=0.1, process=child)
        time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=60)
    run_id = ready.read_text()
    assert fx.napper.status(run_id) == "CRASHED"

    def stopped_lines() -> list[str]:
        return [m for m in run_sync(_run_logs(run_id)) if "was stopped before the run finished" in m]

    [line] = eventually(stopped_lines, "the run's log line saying it was stopped", timeout=30, interval=0.5)
    assert f"workflow.retry({run_id!r})" in line
