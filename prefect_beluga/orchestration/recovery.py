"""Lost and crashed runs of a deployment are finished by themselves, through two Prefect automations.

    ```python
    # example: not run (needs a process work pool "beluga" on the Prefect API)
    from prefect_beluga.orchestration.recovery import ensure_recovery
    ensure_recovery(tag="beluga:recover", work_pool="beluga")   # every deployment tagged so
    ```

    ```bash
    python -m prefect_beluga.orchestration.recovery --tag beluga:recover --work-pool beluga   # the same
    ```

`workflow.deploy()` calls it for its own deployment; `flows/prefect.yaml` calls it as a build
step (`deploy_step`), for the deployments it tags `beluga:recover`. It is all Prefect's own
machinery (`prefect automation ls` lists the automations, the resumes are flow runs of the
`beluga-resume/<pool>` deployment), and none of it ever acts on a finished run: states are
*proposed* through Prefect's orchestration rules (`force=False`), and only a run that is Crashed
when the resume runs is rescheduled, whatever events the server saw or missed.

1. **Lost** (proactive automation): after a run's `Pending`, `Running` or `heartbeat` event, some
   event of the run must follow within `lost_after` seconds. None means its process died with
   no word (worker or machine killed, submission failed in a database outage): the run is
   proposed **Crashed** (Prefect aborts that for a run that is already final: "Run is already
   in terminal state COMPLETED"), and a resume is started.
2. **Crashed** (reactive automation): a **Crashed** run, whether the engine recorded it (a
   worker stopped, an orphaned run process) or the first automation did, gets a resume.
3. **Resume** (`resume_crashed_run`, a flow run of the `beluga-resume/<pool>` deployment on the
   covered runs' work pool, one at a time): reads the run's state *now*; only if it is Crashed
   is it proposed **AwaitingRetry** (so is every other run of its deployment Crashed now: one
   resume finishes a lost machine's runs); any worker of the pool runs it again and durable steps are
   read back from their persisted results. A run already rescheduled, running or finished is
   left alone, so a resume that comes twice, or late, changes nothing.

Why the lost automation starts a resume too: after a server restart, Prefect's triggers service
holds back a state event whose predecessor it did not see (its seen-set is in memory) for up to
15 minutes, so the second automation would hear of a Crashed run that late; the first one's
timer is not held.

Why `lost_after` defaults to three heartbeat periods: a live run whose heartbeats were merely
delayed (an API outage shorter than two periods) must not be proposed Crashed, or it would be
started twice. Keep it above the longest time your infrastructure takes to start a run, too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import flow

LOST_MESSAGE = (
    "The process running this flow run died (worker lost?): no heartbeat or state for {seconds:g}s. "
    "Marked Crashed by the 'beluga: recover' automations, which reschedule it: a worker of the pool "
    "runs it again, reading finished steps back from their persisted results."
)
RESUME_MESSAGE = (
    "Rescheduled after a crash by the 'beluga: recover' automations: a worker of the pool runs it "
    "again, reading finished steps back from their persisted results."
)
#: Automatic reschedules in a row after which a run stops instead of crashing again (a run whose
#: process dies every time, e.g. out of memory, must not loop forever on the pool).
MAX_RESUMES = 3
#: The tag `flows/prefect.yaml` gives the deployments its recovery automations cover.
RECOVER_TAG = "beluga:recover"
#: The flow whose runs reschedule a crashed run (deployment `beluga-resume/<work pool>`).
RESUME_FLOW = "beluga-resume"
#: Its entrypoint, a module path: the workers import it from the installed package, no code pull.
RESUME_ENTRYPOINT = "prefect_beluga.orchestration.recovery.resume_crashed_run"
#: How long a resume waits for a run that is not final yet to reach Crashed (the lost
#: automation proposes Crashed and starts the resume at once; either may land first).
SETTLE_SECONDS = 30.0
#: Flow-run events that start the lost-run clock: the run has (or should soon have) a process.
_STARTS = ("prefect.flow-run.Pending", "prefect.flow-run.Running", "prefect.flow-run.Retrying",
           "prefect.flow-run.heartbeat")


def automation_names(scope: str) -> tuple[str, str]:
    """The names of the (lost, resume) automations for `scope` (a deployment or a tag)."""
    return f"beluga: recover lost runs of {scope}", f"beluga: recover crashed runs of {scope}"


def default_lost_after() -> float:
    """Three heartbeats: `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` (at least 30 s) times 3."""
    from prefect.settings import get_current_settings

    frequency = get_current_settings().flows.heartbeat_frequency or 180
    return 3.0 * max(frequency, 30)


def check_lost_after(lost_after: Any) -> float:
    from prefect_beluga.core._checks import check_number

    if lost_after is None:
        return default_lost_after()
    return float(check_number(lost_after, "lost_after", low=30, strict=False, seconds=True,
                              why=" (Prefect's heartbeat minimum)"))


def _automations(scope: str, related: dict[str, str], lost_after: float, resume_deployment: Any) -> list[Any]:
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState, RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    def start_resume(settle_seconds: float) -> RunDeployment:
        # The run is named by the triggering event (its resource id: `prefect.flow-run.<id>`).
        return RunDeployment(source="selected", deployment_id=resume_deployment,
                             parameters={"flow_run": "{{ event.resource.id }}", "settle_seconds": settle_seconds})

    lost_name, resume_name = automation_names(scope)
    lost = AutomationCore(
        name=lost_name,
        description=("Created by prefect-beluga: a run whose process stops sending heartbeats is marked "
                     "Crashed, then resumed."),
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=related,
            after=set(_STARTS),
            expect={"prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=lost_after),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message=LOST_MESSAGE.format(seconds=lost_after), force=False
            ),
            start_resume(SETTLE_SECONDS),  # the Crashed just proposed may land after it starts
        ],
    )
    resume = AutomationCore(
        name=resume_name,
        description="Created by prefect-beluga: a crashed run is rescheduled; durable steps are read back.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=related,
            expect={"prefect.flow-run.Crashed"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[start_resume(0)],  # the run was Crashed: if it is not now, someone resumed it
    )
    return [lost, resume]


def count_resumes(states: Sequence[Any]) -> int:
    """Reschedules by these automations in a row, newest first, back to the last other schedule."""
    resumes = 0
    for state in reversed(states):
        if state.message == RESUME_MESSAGE:
            resumes += 1
        elif state.is_scheduled():
            break  # scheduled by someone else: a manual retry or the first run
    return resumes


@flow(name=RESUME_FLOW, retries=2, retry_delay_seconds=10, persist_result=False)
async def resume_crashed_run(flow_run: str, settle_seconds: float = SETTLE_SECONDS) -> str:
    """Reschedule `flow_run` (an id, or an event's `prefect.flow-run.<id>`) if it is Crashed now,
    and every other run of its deployment that crashed in the last `SWEEP_HOURS` hours.

    Started by the recovery automations; safe to start by hand, twice, or late: a run that is
    not Crashed when this looks (rescheduled, running, finished) is left alone. A Pending or
    Running run is watched for up to `settle_seconds` first (the lost automation proposes
    Crashed and starts this at once). Returns the name of the state `flow_run` is left in.

    Why the others too: resumes run one at a time, each a process a worker starts, so a lost
    machine's many runs would wait in line for one each; the first resume reschedules them all
    and the ones queued after find nothing to do (and a run whose own resume failed is not
    stranded).
    """
    from prefect.client.orchestration import get_client
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    run_id = UUID(flow_run.removeprefix("prefect.flow-run."))
    async with get_client() as client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settle_seconds
        run = await client.read_flow_run(run_id)
        while run.state is not None and (run.state.is_running() or run.state.is_pending()) and loop.time() < deadline:
            await asyncio.sleep(2)
            run = await client.read_flow_run(run_id)
        state = run.state
        if state is None or not state.is_crashed():
            logger.info("flow run %s is %s, not Crashed: nothing to resume", run_id, state and state.name)
            left_in = state.name if state else "None"
        else:
            left_in = await _reschedule(client, run, logger, loudly=True)
        if run.deployment_id is not None:
            for other in await _crashed_runs_of(client, run.deployment_id):
                if other.id != run_id:
                    await _reschedule(client, other, logger, loudly=False)
        return left_in


#: How far back a resume looks for other crashed runs of the same deployment.
SWEEP_HOURS = 24


async def _crashed_runs_of(client: Any, deployment_id: Any) -> list[Any]:
    from datetime import datetime, timezone

    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterEndTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    since = datetime.now(timezone.utc) - timedelta(hours=SWEEP_HOURS)
    return await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])),
            end_time=FlowRunFilterEndTime(after_=since),
        ),
        limit=200,
    )


async def _reschedule(client: Any, run: Any, logger: Any, *, loudly: bool) -> str:
    """Propose AwaitingRetry for the Crashed `run`, unless it crashed `MAX_RESUMES` times in a row."""
    from prefect.states import AwaitingRetry

    resumes = count_resumes(await client.read_flow_run_states(run.id))
    if resumes >= MAX_RESUMES:
        (logger.error if loudly else logger.info)(
            "flow run %s crashed again after %d reschedules in a row; not rescheduling it: find why "
            "its process dies (out of memory? killed?), then `prefect flow-run retry %s`",
            run.id, resumes, run.id,
        )
        return run.state.name
    result = await client.set_flow_run_state(run.id, AwaitingRetry(message=RESUME_MESSAGE), force=False)
    logger.info("flow run %s: proposed AwaitingRetry: %s (%s)", run.id, result.status.value,
                result.state.name if result.state else "-")
    return result.state.name if result.state else run.state.name


async def _ensure_resume_deployment(client: Any, work_pool: str) -> Any:
    """The `beluga-resume/<work_pool>` deployment (created or updated), one resume at a time."""
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.callables import parameter_schema

    from prefect_beluga.core.errors import ValidationError

    try:
        await client.read_work_pool(work_pool)
    except ObjectNotFound:
        raise ValidationError(
            f"ensure_recovery: no work pool {work_pool!r} on the Prefect API at {client.api_url}: create it "
            f"(prefect work-pool create {work_pool} --type process)"
        ) from None
    flow_id = await client.create_flow_from_name(RESUME_FLOW)
    return await client.create_deployment(
        flow_id=flow_id,
        name=work_pool,
        work_pool_name=work_pool,
        entrypoint=RESUME_ENTRYPOINT,
        parameter_openapi_schema=parameter_schema(resume_crashed_run).model_dump(mode="json"),
        description="Created by prefect-beluga: reschedules a crashed run of a covered deployment (docs/workflows.md).",
        # Two resumes of one run at once could both see it Crashed; one at a time, the second sees
        # it rescheduled and leaves it.
        concurrency_limit=1,
        concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
    )


async def aensure_recovery(
    *, deployment_id: Any = None, tag: str | None = None, work_pool: str | None = None,
    scope: str | None = None, lost_after: float | None = None, client: Any = None,
) -> list[str]:
    """Create (or replace) the recovery automations for one deployment or one tag.

    Args:
        deployment_id: Cover the runs of this deployment.
        tag: Or cover the runs of every deployment with this tag (e.g. `RECOVER_TAG`).
        work_pool: The work pool whose workers run the resumes (default: the deployment's;
            required with `tag=`). It gets the `beluga-resume/<work_pool>` deployment.
        scope: The name the automations carry (default: the tag, or the deployment id).
        lost_after: Seconds without any event of a started run before it counts as lost
            (default three `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` periods; at least 30).
        client: A Prefect client to use (default: a new one on the current API).

    Returns the automations' ids. Running it again replaces them: it is safe to repeat.
    """
    from prefect_beluga.core.errors import ValidationError

    if (deployment_id is None) == (tag is None):
        raise ValidationError("ensure_recovery: give exactly one of deployment_id= or tag=")
    if tag is not None and (not isinstance(tag, str) or not tag):
        raise ValidationError(f"ensure_recovery: tag must be a non-empty str, got {tag!r}")
    if tag is not None and work_pool is None:
        raise ValidationError(
            f"ensure_recovery(tag={tag!r}): give work_pool=, the pool whose workers run the covered "
            "deployments (their resumes run there too)"
        )
    if work_pool is not None and (not isinstance(work_pool, str) or not work_pool):
        raise ValidationError(f"ensure_recovery: work_pool must be a work pool name, got {work_pool!r}")
    lost_after = check_lost_after(lost_after)
    if tag is not None:
        related = {"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
    else:
        related = {"prefect.resource.id": f"prefect.deployment.{deployment_id}", "prefect.resource.role": "deployment"}
    scope = scope or tag or f"deployment {deployment_id}"
    if client is None:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return await aensure_recovery(deployment_id=deployment_id, tag=tag, work_pool=work_pool, scope=scope,
                                          lost_after=lost_after, client=client)
    if work_pool is None:
        work_pool = (await client.read_deployment(deployment_id)).work_pool_name
        if not work_pool:
            raise ValidationError(f"ensure_recovery: deployment {deployment_id} has no work pool to run resumes on")
    resume_deployment = await _ensure_resume_deployment(client, work_pool)
    ids = []
    for automation in _automations(scope, related, lost_after, resume_deployment):
        for old in await client.read_automations_by_name(automation.name):
            await client.delete_automation(old.id)
        ids.append(str(await client.create_automation(automation)))
    return ids


def ensure_recovery(
    *, deployment_id: Any = None, tag: str | None = None, work_pool: str | None = None,
    scope: str | None = None, lost_after: float | None = None,
) -> list[str]:
    """Sync twin of `aensure_recovery`."""
    from prefect_beluga.core._sync import run_sync

    return run_sync(aensure_recovery(deployment_id=deployment_id, tag=tag, work_pool=work_pool, scope=scope,
                                     lost_after=lost_after))


def deployment_scope(flow_name: str, deployment_name: str) -> str:
    """The scope name of a workflow deployment's recovery automations."""
    return f"{flow_name}/{deployment_name}"


def deploy_step(work_pool: str, tag: str = RECOVER_TAG, lost_after: float | None = None) -> dict[str, list[str]]:
    """A `prefect deploy` step (see `flows/prefect.yaml`): `ensure_recovery(tag=..., work_pool=...)`."""
    return {"recovery_automations": ensure_recovery(tag=tag, work_pool=work_pool, lost_after=lost_after)}


async def recovery_covers(client: Any, flow_run: Any, flow_name: str) -> bool:
    """Whether an enabled recovery automation covers `flow_run` (by its deployment or a tag)."""
    deployment = await client.read_deployment(flow_run.deployment_id)
    scopes = [deployment_scope(flow_name, deployment.name), *(flow_run.tags or ())]
    for scope in scopes:
        for automation in await client.read_automations_by_name(automation_names(scope)[1]):
            if automation.enabled:
                return True
    return False


async def check_resumes(flow_run: Any, client: Any) -> None:
    """Fail a run rescheduled `MAX_RESUMES` times in a row by the resume automation.

    Called as a workflow's run starts again (its `run_count` above 1). A manual retry
    (`prefect flow-run retry`, `workflow.retry`) starts the count again.
    """
    from prefect_beluga.core.errors import WorkflowError

    resumes = count_resumes(await client.read_flow_run_states(flow_run.id))
    if resumes > MAX_RESUMES:
        raise WorkflowError(
            f"flow run {flow_run.id} crashed and was rescheduled {resumes} times in a row by the "
            f"'beluga: recover' automations; not going on: find why its process dies (out of "
            f"memory? killed?), then `prefect flow-run retry {flow_run.id}`",
            run_id=str(flow_run.id),
        )


CRASH_LOG = (
    "The process running this flow run was stopped before the run finished (worker lost or shut "
    "down?); Prefect recorded: {message!r}. Finished steps keep their persisted results: {next_step}"
)


async def explain_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_crashed` hook: a log line on the crashed run saying what happened and what comes next."""
    from prefect.client.orchestration import get_client
    from prefect.logging.loggers import flow_run_logger

    covered = False
    if flow_run.deployment_id is not None:
        try:
            async with get_client() as client:
                covered = await recovery_covers(client, flow_run, flow.name)
        except Exception:  # the API may be what failed: say what a person can do
            covered = False
    if covered:
        next_step = "the 'beluga: recover' automations reschedule it now; a worker of the pool finishes it."
    elif flow_run.deployment_id is not None:
        next_step = f"no recovery automation covers it: run `prefect flow-run retry {flow_run.id}` to finish it."
    else:
        next_step = f"run workflow.retry({str(flow_run.id)!r}) from any process to finish it."
    flow_run_logger(flow_run, flow).error(CRASH_LOG.format(message=state.message, next_step=next_step))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prefect_beluga.orchestration.recovery",
        description="Create (or replace) the automations that finish lost and crashed runs by themselves.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--tag", help=f"cover every deployment with this tag (flows/prefect.yaml: {RECOVER_TAG})")
    target.add_argument("--deployment-id", help="cover one deployment")
    parser.add_argument("--work-pool", default=None,
                        help="the pool whose workers run the resumes (default: the deployment's; needed with --tag)")
    parser.add_argument("--lost-after", type=float, default=None,
                        help="seconds without an event of a started run (default: 3 heartbeat periods)")
    args = parser.parse_args(argv)
    ids = asyncio.run(aensure_recovery(deployment_id=args.deployment_id, tag=args.tag, work_pool=args.work_pool,
                                       lost_after=args.lost_after))
    print(f"recovery automations for {args.tag or args.deployment_id}: {', '.join(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
