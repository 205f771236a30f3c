"""On a real `prefect server`: the PrefectServer helper, and deployed workflows run by two
`prefect worker` processes of a process work pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from prefect_beluga import Chain, Orchestrator, RunConfig, WorkflowNotDeployed
from prefect_beluga.core._sync import run_sync
from prefect_beluga.testing.helpers import (
    create_process_pool,
    eventually,
    read_flow_run,
    read_task_runs,
    stop_process_group,
)
from prefect_beluga.testing.prefect_server import PrefectServer


def test_prefect_server_is_healthy_and_reachable_from_a_subprocess(prefect_server: PrefectServer):
    with urllib.request.urlopen(f"{prefect_server.api_url}/health", timeout=5) as reply:
        assert reply.read() == b"true"
    code = (
        "import asyncio\n"
        "from prefect.client.orchestration import get_client\n"
        "async def main():\n"
        "    async with get_client() as client:\n"
        "        print(client.api_url)\n"
        "        print(await client.api_healthcheck())\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=prefect_server.env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert prefect_server.api_url in out.stdout
    assert "None" in out.stdout  # api_healthcheck returns None when healthy


async def test_flows_run_under_settings_are_recorded_by_that_server_and_after_by_the_session_api(
    prefect_server: PrefectServer, run_name: str
):
    # Task runs reach the API as events, through one events worker per process: settings()
    # must hand it over, or the server's task runs land in the session's API (and after it,
    # the session's go to a stopped server).
    chain = Chain([lambda s: {"a": 1}, lambda s: {"b": 2}], name="settings-handover")
    await chain.ainvoke({}, RunConfig(run_name=f"{run_name}-before"))
    with prefect_server.settings():
        await chain.ainvoke({}, RunConfig(run_name=run_name))
        on_server = await read_flow_run(run_name)
        assert len(await read_task_runs(on_server.id, expected=2)) == 2
    await chain.ainvoke({}, RunConfig(run_name=f"{run_name}-after"))
    for name in (f"{run_name}-before", f"{run_name}-after"):
        assert len(await read_task_runs((await read_flow_run(name)).id, expected=2)) == 2


def test_prefect_server_rejects_bad_timeouts():
    with pytest.raises(ValueError, match="startup_timeout"):
        PrefectServer(startup_timeout=0)


def test_deployed_workflow_runs_spread_over_two_workers(prefect_server: PrefectServer, tmp_path):
    import workflow_fixtures as fx

    pool = "beluga-test-pool"
    with prefect_server.settings():
        run_sync(create_process_pool(pool))
        deployment_id = fx.spread.deploy(work_pool=pool)
        assert deployment_id
        workers = [fx.start_worker(prefect_server, pool, f"worker-{i}", tmp_path) for i in (1, 2)]
        try:
            runs = [fx.spread.execute({"a": i, "b": 100, "seconds": 1}) for i in range(4)]
            assert len({run_id for _, run_id in runs}) == 4
            again = fx.spread.execute({"a": 0, "b": 100}, idempotency_key="once")
            assert fx.spread.execute({"a": 0, "b": 100}, idempotency_key="once") == again
            results = [fx.spread.get_result(wid, rid, timeout=180) for wid, rid in runs + [again]]
        finally:
            for worker in workers:
                stop_process_group(worker)
        logs = {p.name: p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log")}
        assert [r["sum"] for r in results] == [100, 101, 102, 103, 100], logs
        assert {r["worker"] for r in results} == {"worker-1", "worker-2"}, logs
        listed = {r.run_id: r for r in fx.spread.list_runs()}
        assert all(listed[rid].deployment_id == deployment_id for _, rid in runs)
        assert all(listed[rid].status == "COMPLETED" for _, rid in runs)


def test_run_whose_worker_is_killed_is_finished_by_another_without_recomputing(prefect_server: PrefectServer, tmp_path):
    """A worker's flow-run process and the worker itself are SIGKILLed in step 3; after a retry a
    second worker finishes the same run, reading steps 1 and 2 back from their persisted results."""
    import workflow_fixtures as fx

    pool, log, gate = "beluga-durable-pool", tmp_path / "steps.log", tmp_path / "gate"
    with prefect_server.settings():
        run_sync(create_process_pool(pool))
        fx.durable.deploy(work_pool=pool)
        first = fx.start_worker(prefect_server, pool, "doomed-worker", tmp_path)
        try:
            _, run_id = fx.durable.execute({"n": 4, "log": str(log), "gate": str(gate)})

            def step3_started() -> bool:
                doomed = tmp_path / "doomed-worker.log"
                assert log.exists() and "step3" in log.read_text(), (
                    doomed.read_text(errors="replace")[-3000:] if doomed.exists() else ""
                )
                return True

            eventually(step3_started, "step 3 to start on the doomed worker", timeout=180)
            flow_run_pid = int(log.read_text().splitlines()[-1].split()[1])
            os.kill(flow_run_pid, signal.SIGKILL)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(15)
        finally:
            stop_process_group(first)
        assert fx.durable.status(run_id) == "RUNNING"  # nobody is left to say otherwise

        gate.touch()
        second = fx.start_worker(prefect_server, pool, "rescue-worker", tmp_path)
        try:
            assert fx.durable.retry(run_id) == ("test-durable", run_id)
            result = fx.durable.get_result("test-durable", run_id, timeout=180)
        finally:
            stop_process_group(second)
    assert result["x"] == (4 + 1) * 10 + 3
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["step1", "step2", "step3", "step3"]
    assert lines[2].split()[1] == str(flow_run_pid) != lines[3].split()[1]


def test_served_workflow_runs_what_another_process_executes(prefect_server: PrefectServer, tmp_path):
    import workflow_fixtures as fx

    env = dict(prefect_server.env)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    env["BELUGA_TEST_WORKER"] = "served"
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-c", "import workflow_fixtures as fx; fx.adder.serve()"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )
    caller = Orchestrator().create_workflow(fx.add, workflow_id="test-adder", distributed=True)
    try:
        with prefect_server.settings():

            def executed() -> tuple[str, str] | None:
                try:
                    return caller.execute({"a": 2, "b": 40})
                except WorkflowNotDeployed:
                    if server.poll() is not None:  # it died: fail now, with its log
                        pytest.fail((tmp_path / "serve.log").read_text(errors="replace")[-3000:])
                    return None

            workflow_id, run_id = eventually(executed, "the served deployment to appear", timeout=120, interval=1)
            result = caller.get_result(workflow_id, run_id, timeout=120)
    finally:
        stop_process_group(server)
        log.close()
    assert result["sum"] == 42 and result["worker"] == "served" and result["pid"] != os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve.log"]  # no code copied into the runner's folder


def test_throwaway_postgres_runs_unprivileged_on_loopback_with_a_password_and_is_removed():
    import asyncio

    import asyncpg

    from prefect_beluga.testing.prefect_server import ThrowawayPostgres, postgres_bin_dir

    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")

    async def query(url: str, sql: str) -> object:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    with ThrowawayPostgres() as pg:
        root, url = pg.root, pg.url.replace("postgresql+asyncpg://", "postgresql://")
        assert "@127.0.0.1:" in url and "password" not in repr(pg).lower() and pg._password not in repr(pg)
        assert asyncio.run(query(url, "show listen_addresses")) == "127.0.0.1"
        assert asyncio.run(query(url, "select current_database()")) == "prefect"
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as another user, who owns its files
            assert os.stat(f"/proc/{pg._process.pid}").st_uid != 0
            assert (root / "data").stat().st_uid != 0
        wrong = url.replace(pg._password, "wrong-password")
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(query(wrong, "select 1"))
    assert not root.exists()
