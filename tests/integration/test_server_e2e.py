"""End to end on a real `prefect server`: blocks, `prefect deploy --all`, a process worker, runs.

What a user does after reading the README: create the blocks from the environment, deploy
flows/prefect.yaml to a process work pool, start a worker, trigger runs. Then everything is
read back through the API: final states, task runs, the edges between them, artifacts.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.deployments import run_deployment

from prefect_beluga.testing.helpers import stop_process_group, task_runs
from prefect_beluga.testing.prefect_server import PrefectServer, prefect_executable

ROOT = Path(__file__).resolve().parents[2]
POOL = "beluga"  # the work pool flows/prefect.yaml names


def cli(server: PrefectServer, *args: str, cwd: Path = ROOT, timeout: float = 180) -> str:
    env = {**server.env, "PWD": str(cwd)}
    env = {k: v for k, v in env.items() if k not in ("OPENAI_API_KEY", "PINECONE_API_KEY")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """Blocks created, flows/prefect.yaml deployed, and one process worker polling the pool."""
    prefect = prefect_executable()
    out = cli(prefect_server, sys.executable, "blocks/create_blocks.py")
    assert "OPENAI_API_KEY is not set" in out
    cli(prefect_server, prefect, "work-pool", "create", POOL, "--type", "process")
    cli(prefect_server, prefect, "--no-prompt", "deploy", "--all", cwd=ROOT / "flows")
    worker_log = open(prefect_server.home / "worker.log", "wb")
    worker = subprocess.Popen(
        [prefect, "worker", "start", "--pool", POOL, "--name", "e2e-worker", "--limit", "2"],
        cwd=ROOT, env={k: v for k, v in prefect_server.env.items() if k != "OPENAI_API_KEY"},
        stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        with prefect_server.settings():
            yield prefect_server
    finally:
        stop_process_group(worker, timeout=30)
        worker_log.close()


async def run(name: str, **parameters) -> object:
    flow_run = await run_deployment(name, parameters=parameters, timeout=240, poll_interval=1)
    assert flow_run.state.is_completed(), f"{name}: {flow_run.state!r}"
    return flow_run


async def artifacts_of(client, flow_run_id) -> dict[str, object]:
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {a.key or a.type: a for a in artifacts}


async def test_deploy_all_registers_the_three_deployments_with_the_ingest_schedule(deployed):
    async with get_client() as client:
        ingest = await client.read_deployment_by_name("rag-ingest/rag-ingest")
        answer = await client.read_deployment_by_name("rag-answer/rag-answer")
        await client.read_deployment_by_name("quickstart/quickstart")
    assert ingest.work_pool_name == answer.work_pool_name == POOL
    assert [s.schedule.interval.total_seconds() for s in ingest.schedules] == [3600]
    assert "OPENAI_API_KEY" not in str(ingest.parameters) and "api_key" not in str(answer.parameters)


def _next_run(schedule) -> object:
    from prefect.server.schemas.schedules import IntervalSchedule

    interval = IntervalSchedule(interval=schedule.interval, anchor_date=schedule.anchor_date,
                                timezone=schedule.timezone)
    return asyncio.run(interval.get_dates(n=1))[0]


async def test_redeploying_does_not_move_the_ingest_schedule(deployed):
    async def schedule_of_ingest():
        async with get_client() as client:
            ingest = await client.read_deployment_by_name("rag-ingest/rag-ingest")
        [schedule] = ingest.schedules
        return schedule.schedule

    before = await schedule_of_ingest()
    await asyncio.sleep(1.5)  # an unanchored interval would now restart 1.5 s later
    cli(deployed, prefect_executable(), "--no-prompt", "deploy", "--all", cwd=ROOT / "flows")
    after = await schedule_of_ingest()
    assert after.anchor_date == before.anchor_date
    assert (after.anchor_date.minute, after.anchor_date.second, after.anchor_date.microsecond) == (0, 0, 0)
    assert await asyncio.to_thread(_next_run, after) == await asyncio.to_thread(_next_run, before)
    assert (await asyncio.to_thread(_next_run, after)).minute == 0  # on the hour


async def test_every_deployment_of_prefect_yaml_is_covered_by_the_recovery_automations(deployed):
    """`prefect deploy` ran the build step: the tag's two automations exist, enabled, the resume
    deployment is on the pool, and every deployment carries the tag, so its lost and crashed runs
    are rescheduled by themselves."""
    import yaml

    from prefect_beluga.orchestration.recovery import RECOVER_TAG, RESUME_FLOW, automation_names

    names = [d["name"] for d in yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())["deployments"]]
    async with get_client() as client:
        automations = [a for name in automation_names(RECOVER_TAG) for a in await client.read_automations_by_name(name)]
        deployments = await client.read_deployments()
        resume = await client.read_deployment_by_name(f"{RESUME_FLOW}/{POOL}")
    assert len(automations) == 2 and all(a.enabled for a in automations)
    assert resume.work_pool_name == POOL and all(a.actions[-1].deployment_id == resume.id for a in automations)
    tagged = {d.name for d in deployments if RECOVER_TAG in d.tags}
    assert set(names) <= tagged, (names, tagged)


def test_prefect_yaml_names_a_prefect_version_inside_the_supported_range():
    import tomllib
    import yaml
    from packaging.requirements import Requirement

    declared = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())["prefect-version"]
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [prefect] = [Requirement(d) for d in dependencies if Requirement(d).name == "prefect"]
    assert prefect.specifier.contains(str(declared)), (declared, str(prefect.specifier))


async def test_ingest_then_answer_run_on_the_worker(deployed):
    ingest = await run("rag-ingest/rag-ingest")
    answer = await run("rag-answer/rag-answer", question="How are Prefect tasks retried?")
    async with get_client() as client:
        report = await (await client.read_flow_run(ingest.id)).state.aresult()
        assert report["written"] == report["chunks"] > 0

        tasks = {t.name: t for t in await task_runs(answer.id, expected=3)}
        states = {n: t.state_type.value for n, t in tasks.items()}
        assert states == {"embed-query": "COMPLETED", "retrieve": "COMPLETED", "generate": "COMPLETED"}
        upstream = {i.id for i in tasks["generate"].task_inputs["upstream"]}
        assert tasks["retrieve"].id in upstream  # the edge the UI draws

        ingest_artifacts = await artifacts_of(client, ingest.id)
        assert ingest_artifacts["rag-ingest-progress"].data == 100.0
        answers = (await artifacts_of(client, answer.id))["rag-answers"]
        assert "How are Prefect tasks retried?" in answers.data and "prefect.md" in answers.data

    again = await run("rag-ingest/rag-ingest")
    async with get_client() as client:
        rerun = await (await client.read_flow_run(again.id)).state.aresult()
    assert rerun["written"] == 0 and rerun["unchanged"] == report["chunks"]


async def test_quickstart_graph_edges_and_mermaid_artifact(deployed):
    quickstart = await run("quickstart/quickstart")
    async with get_client() as client:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[quickstart.id]))
        )
        flows = {r.id: (await client.read_flow(r.flow_id)).name for r in children}
        graph_run = next(r for r in children if flows[r.id] == "quickstart-tutorial-graph")
        assert graph_run.state.is_completed()
        tasks = {t.name: t for t in await task_runs(graph_run.id, expected=3)}
        for child in ("step2", "step3"):
            assert tasks["step1"].id in {i.id for i in tasks[child].task_inputs["upstream"]}
        mermaid = [a for a in (await artifacts_of(client, graph_run.id)).values() if a.type == "markdown"]
        assert mermaid and "step1 --> step2" in mermaid[0].data
