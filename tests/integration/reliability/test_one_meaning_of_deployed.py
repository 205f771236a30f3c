"""One meaning of "deployed": a workflow with a deployment on the API runs through it from any
process (the deployment is looked up on each `execute`, not remembered by the process that made
it); running it locally anyway takes `Workflow(..., local=True)`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import workflow_fixtures as fx

from prefect_beluga import Orchestrator, ValidationError
from prefect_beluga.core._sync import run_sync
from prefect_beluga.testing.helpers import create_process_pool
from prefect_beluga.testing.prefect_server import PrefectServer

from . import outage_flows as of

POOL = "beluga-placed"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server() -> Iterator[PrefectServer]:
    with PrefectServer() as server:
        yield server


def test_a_deployment_made_by_another_process_runs_what_this_one_executes(server: PrefectServer, tmp_path: Path):
    with server.settings():
        run_sync(create_process_pool(POOL))
        wid, rid = of.placed.execute({})  # no deployment yet: this process runs it
        assert of.placed.get_result(wid, rid, timeout=120)["pid"] == os.getpid()
    path = os.pathsep.join([str(Path(of.__file__).parent), server.env.get("PYTHONPATH", "")])
    env = {**server.env, "PYTHONPATH": path}
    code = f"import outage_flows as of; of.placed.deploy(work_pool={POOL!r}, resume_lost_runs=False)"
    made = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-3000:]

    worker = fx.start_worker(server, POOL, "placer", tmp_path)
    try:
        with server.settings():
            wid, rid = of.placed.execute({})  # this process never called deploy
            remote = of.placed.get_result(wid, rid, timeout=180)
            here = Orchestrator().create_workflow(of.place, workflow_id="outage-placed", local=True)
            local_ids = here.execute({})
            local = here.get_result(*local_ids, timeout=120)
            listed = {r.run_id: r for r in of.placed.list_runs()}
    finally:
        fx.kill_group(worker)
    assert remote["worker"] == "placer" and remote["pid"] != os.getpid(), (tmp_path / "placer.log").read_text()[-3000:]
    assert listed[rid].deployment_id is not None
    assert local["pid"] == os.getpid() and local["worker"] == os.environ.get("BELUGA_TEST_WORKER")
    assert listed[local_ids[1]].deployment_id is None


def test_local_and_distributed_are_one_choice():
    with pytest.raises(ValidationError, match="distributed=True .* local=True .* contradict"):
        Orchestrator().create_workflow(of.place, workflow_id="outage-both", distributed=True, local=True)
    with pytest.raises(ValidationError, match="local must be True or False"):
        Orchestrator().create_workflow(of.place, workflow_id="outage-both", local="yes")
