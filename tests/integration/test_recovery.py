"""The recovery automations (`prefect_beluga.orchestration.recovery`) on the session's API: what
they are made of, that making them again replaces them, that the states they propose cannot
reopen a finished run, what a resume does to runs in each state, and the crash-loop stop.

Killing servers, databases and workers under them is the chaos suite's job
(`reliability/test_chaos.py`); `test_server_e2e.py` checks `flows/prefect.yaml`'s build step.
"""

from __future__ import annotations

import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import AwaitingRetry, Cancelled, Completed, Crashed, Failed, Running, Scheduled

from prefect_beluga.core.errors import ValidationError, WorkflowError
from prefect_beluga.orchestration.recovery import (
    LOST_MESSAGE,
    MAX_RESUMES,
    RESUME_ENTRYPOINT,
    RESUME_FLOW,
    RESUME_MESSAGE,
    aensure_recovery,
    automation_names,
    check_resumes,
    main,
    resume_crashed_run,
)
from prefect_beluga.testing.helpers import create_process_pool

POOL = "beluga-recovery-tests"


@pytest.fixture(scope="module", autouse=True)
async def pool():
    await create_process_pool(POOL)


async def _automations(scope: str) -> list:
    async with get_client() as client:
        return [a for name in automation_names(scope) for a in await client.read_automations_by_name(name)]


async def test_a_tag_gets_a_lost_run_and_a_crashed_run_automation_and_making_them_again_replaces_them():
    tag = f"recover-{uuid.uuid4().hex[:8]}"
    first = await aensure_recovery(tag=tag, work_pool=POOL, lost_after=45)
    second = await aensure_recovery(tag=tag, work_pool=POOL, lost_after=60)
    automations = await _automations(tag)
    assert sorted(str(a.id) for a in automations) == sorted(second) and not set(first) & set(second)
    lost, resume = automations
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(f"{RESUME_FLOW}/{POOL}")
    assert deployment.entrypoint == RESUME_ENTRYPOINT and deployment.work_pool_name == POOL
    assert deployment.global_concurrency_limit.limit == 1  # one resume at a time
    for automation in automations:
        assert automation.trigger.match_related.model_dump() == {"prefect.resource.id": f"prefect.tag.{tag}",
                                                                 "prefect.resource.role": "tag"}
        start = automation.actions[-1]  # every automation ends by starting a resume of the run
        assert start.type == "run-deployment" and start.deployment_id == deployment.id
        assert start.parameters["flow_run"] == "{{ event.resource.id }}"
    assert lost.trigger.posture == "Proactive" and lost.trigger.within.total_seconds() == 60
    assert "prefect.flow-run.heartbeat" in lost.trigger.after and lost.trigger.expect == {"prefect.flow-run.*"}
    mark, _ = lost.actions
    assert mark.state == StateType.CRASHED and mark.message == LOST_MESSAGE.format(seconds=60)
    assert mark.force is False  # Prefect's orchestration rules decide, never bypassed
    assert resume.trigger.expect == {"prefect.flow-run.Crashed"} and resume.trigger.posture == "Reactive"
    assert len(resume.actions) == 1
    # only the lost-run automation's resume waits for its Crashed proposal to land
    assert lost.actions[1].parameters["settle_seconds"] > 0 == resume.actions[0].parameters["settle_seconds"]


def test_the_command_line_makes_them_too(capsys):
    tag = f"recover-{uuid.uuid4().hex[:8]}"
    assert main(["--tag", tag, "--work-pool", POOL, "--lost-after", "30"]) == 0
    assert f"recovery automations for {tag}:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, needle",
    [({}, "exactly one of"), ({"tag": "a", "deployment_id": "b"}, "exactly one of"),
     ({"tag": ""}, "non-empty"),
     ({"tag": "a", "work_pool": POOL, "lost_after": 10}, "lost_after must be >= 30 seconds"),
     ({"tag": "a"}, "give work_pool="), ({"tag": "a", "work_pool": "no-such-pool"}, "no work pool 'no-such-pool'")],
)
async def test_bad_arguments_are_clear_errors(kwargs, needle):
    with pytest.raises(ValidationError, match=needle):
        await aensure_recovery(**kwargs)


@flow(persist_result=True)
async def finished() -> int:
    return 42


async def test_the_states_they_propose_cannot_reopen_a_finished_run():
    """What makes a lost Completed event harmless: proposed without force, Crashed is aborted for
    a final run and AwaitingRetry rejected for a Completed one with a persisted result."""
    state = await finished(return_state=True)
    run_id = state.state_details.flow_run_id
    async with get_client() as client:
        crashed = await client.set_flow_run_state(run_id, Crashed(message=LOST_MESSAGE), force=False)
        rescheduled = await client.set_flow_run_state(run_id, AwaitingRetry(message=RESUME_MESSAGE), force=False)
        current = await client.read_flow_run(run_id)
    assert crashed.status.value == "ABORT" and "terminal state" in crashed.details.reason
    assert rescheduled.status.value in ("ABORT", "REJECT")
    assert current.state.is_completed() and await current.state.aresult() == 42


@flow
def placeholder() -> None: ...


async def _run_with_history(states: list, deployment: str = "placeholder") -> object:
    """A run of a deployment (on a pool no worker polls) whose state history is `states` (set
    by force: only the history matters)."""
    async with get_client() as client:
        deployment = await client.create_deployment(
            flow_id=await client.create_flow_from_name(placeholder.name), name=deployment,
            work_pool_name=POOL, entrypoint="nowhere.py:placeholder")
        flow_run = await client.create_flow_run_from_deployment(deployment, state=Scheduled())
        for state in states:
            await client.set_flow_run_state(flow_run.id, state, force=True)
        return await client.read_flow_run(flow_run.id)


def _resumes(n: int) -> list:
    states = []
    for _ in range(n):
        states += [Running(), Crashed(message=LOST_MESSAGE), AwaitingRetry(message=RESUME_MESSAGE)]
    return [*states, Running()]


async def test_a_run_rescheduled_too_often_in_a_row_stops_and_a_manual_retry_starts_the_count_again():
    async with get_client() as client:
        await check_resumes(await _run_with_history(_resumes(MAX_RESUMES)), client)  # still goes on
        looping = await _run_with_history(_resumes(MAX_RESUMES + 1))
        loop = rf"rescheduled {MAX_RESUMES + 1} times in a row.*prefect flow-run retry"
        with pytest.raises(WorkflowError, match=loop):
            await check_resumes(looping, client)
        retried = await _run_with_history([*_resumes(MAX_RESUMES + 1)[:-1], AwaitingRetry(), Running()])
        await check_resumes(retried, client)  # someone retried it by hand: the count starts again


@pytest.mark.parametrize(
    "history, left_in",
    [
        ([Running(), Crashed(message="worker lost")], "AwaitingRetry"),  # the one case it acts on
        ([Running(), Crashed(), AwaitingRetry(message=RESUME_MESSAGE)], "AwaitingRetry"),  # resumed already
        ([Running(), Completed()], "Completed"),
        ([Running(), Failed()], "Failed"),
        ([Running(), Cancelled()], "Cancelled"),
        ([Running()], "Running"),  # alive (watched for settle_seconds, never Crashed): left alone
        (_resumes(MAX_RESUMES)[:-1] + [Running(), Crashed()], "Crashed"),  # a crash loop: stops
    ],
    ids=["crashed", "rescheduled", "completed", "failed", "cancelled", "running", "crash-loop"],
)
async def test_a_resume_reschedules_only_a_run_that_is_crashed_when_it_looks(history, left_in):
    run = await _run_with_history(history)
    for _ in range(2):  # twice, as the two automations may both start one: the second changes nothing
        assert await resume_crashed_run(f"prefect.flow-run.{run.id}", settle_seconds=1) == left_in
    async with get_client() as client:
        states = await client.read_flow_run_states(run.id)
    # its first Scheduled, the history, and one AwaitingRetry if (and only if) it was Crashed
    assert len(states) == 1 + len(history) + (left_in == "AwaitingRetry" and history[-1].is_crashed())
    assert states[-1].name == left_in


async def test_one_resume_reschedules_every_run_of_the_deployment_crashed_now():
    """A lost machine's runs do not wait in line for a resume each: the first one reschedules
    every Crashed run of the deployment (not a finished one, not a crash loop, not another
    deployment's), and the resumes queued after it find nothing to do."""
    deployment = f"sweep-{uuid.uuid4().hex[:8]}"
    crashed = [await _run_with_history([Running(), Crashed(message="worker lost")], deployment) for _ in range(3)]
    completed = await _run_with_history([Running(), Completed()], deployment)
    looping = await _run_with_history(_resumes(MAX_RESUMES)[:-1] + [Running(), Crashed()], deployment)
    elsewhere = await _run_with_history([Running(), Crashed()], f"{deployment}-other")

    assert await resume_crashed_run(str(crashed[0].id), settle_seconds=0) == "AwaitingRetry"
    async with get_client() as client:
        names = {run.id: (await client.read_flow_run(run.id)).state.name
                 for run in [*crashed, completed, looping, elsewhere]}
    assert [names[run.id] for run in crashed] == ["AwaitingRetry"] * 3
    assert (names[completed.id], names[looping.id], names[elsewhere.id]) == ("Completed", "Crashed", "Crashed")
    for run in crashed[1:]:  # their own resumes, queued behind the first: nothing left to do
        assert await resume_crashed_run(str(run.id), settle_seconds=0) == "AwaitingRetry"
    async with get_client() as client:
        assert len(await client.read_flow_run_states(crashed[2].id)) == 1 + 2 + 1  # one AwaitingRetry
