"""Lost and crashed runs of a deployment are finished by themselves, through two Prefect automations.

    ```python
    from prefect_beluga.orchestration.recovery import ensure_recovery
    ensure_recovery(tag="beluga:recover")              # every deployment tagged so
    ```

    ```bash
    python -m prefect_beluga.orchestration.recovery --tag beluga:recover   # the same, from a shell
    ```

`workflow.deploy()` calls it for its own deployment; `flows/prefect.yaml` calls it as a build
step (`deploy_step`), for the deployments it tags `beluga:recover`. Both automations are Prefect's own
machinery (`prefect automation ls` lists them), and neither ever acts on a finished run: each
*proposes* a state through Prefect's orchestration rules (`force=False`), and those rules refuse
to take a run out of a final state the way these do, whatever events the server saw or missed.

1. **Lost** (proactive): after a run's `Pending`, `Running` or `heartbeat` event, some event of
   the run (another heartbeat, a state) must follow within `lost_after` seconds. None means its
   process died with no word (worker or machine killed, submission failed in a database outage):
   the run is proposed **Crashed**. Prefect aborts that for a run that is already final
   ("Run is already in terminal state COMPLETED"): so a server crash that lost a Completed event
   re-runs nothing.
2. **Resume** (reactive): a **Crashed** run, whether the engine recorded it (a worker stopped,
   an orphaned run process) or the first automation did, is proposed **AwaitingRetry**; any
   worker of the pool runs it again and durable steps are read back from their persisted
   results. Prefect rejects that for a Completed run with a persisted result.

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
    from prefect_beluga.core.errors import ValidationError

    if lost_after is None:
        return default_lost_after()
    if not isinstance(lost_after, (int, float)) or isinstance(lost_after, bool) or lost_after < 30:
        raise ValidationError(f"lost_after must be seconds >= 30 (Prefect's heartbeat minimum), got {lost_after!r}")
    return float(lost_after)


def _automations(scope: str, related: dict[str, str], lost_after: float) -> list[Any]:
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    lost_name, resume_name = automation_names(scope)
    lost = AutomationCore(
        name=lost_name,
        description="Created by prefect-beluga: a run whose process stops sending heartbeats is marked Crashed.",
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
            )
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
        actions=[
            ChangeFlowRunState(state=StateType.SCHEDULED, name="AwaitingRetry", message=RESUME_MESSAGE, force=False)
        ],
    )
    return [lost, resume]


async def aensure_recovery(
    *, deployment_id: Any = None, tag: str | None = None, scope: str | None = None,
    lost_after: float | None = None, client: Any = None,
) -> list[str]:
    """Create (or replace) the two recovery automations for one deployment or one tag.

    Args:
        deployment_id: Cover the runs of this deployment.
        tag: Or cover the runs of every deployment with this tag (e.g. `RECOVER_TAG`).
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
    lost_after = check_lost_after(lost_after)
    if tag is not None:
        related = {"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
    else:
        related = {"prefect.resource.id": f"prefect.deployment.{deployment_id}", "prefect.resource.role": "deployment"}
    scope = scope or tag or f"deployment {deployment_id}"
    if client is None:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return await aensure_recovery(deployment_id=deployment_id, tag=tag, scope=scope,
                                          lost_after=lost_after, client=client)
    ids = []
    for automation in _automations(scope, related, lost_after):
        for old in await client.read_automations_by_name(automation.name):
            await client.delete_automation(old.id)
        ids.append(str(await client.create_automation(automation)))
    return ids


def ensure_recovery(
    *, deployment_id: Any = None, tag: str | None = None, scope: str | None = None, lost_after: float | None = None
) -> list[str]:
    """Sync twin of `aensure_recovery`."""
    from prefect_beluga.core._sync import run_sync

    return run_sync(aensure_recovery(deployment_id=deployment_id, tag=tag, scope=scope, lost_after=lost_after))


def deployment_scope(flow_name: str, deployment_name: str) -> str:
    """The scope name of a workflow deployment's recovery automations."""
    return f"{flow_name}/{deployment_name}"


def deploy_step(tag: str = RECOVER_TAG, lost_after: float | None = None) -> dict[str, list[str]]:
    """A `prefect deploy` step (see `flows/prefect.yaml`): `ensure_recovery(tag=...)`."""
    return {"recovery_automations": ensure_recovery(tag=tag, lost_after=lost_after)}


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

    resumes = 0
    for state in reversed(await client.read_flow_run_states(flow_run.id)):
        if state.message == RESUME_MESSAGE:
            resumes += 1
        elif state.is_scheduled():
            break  # scheduled by someone else: a manual retry or the first run
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
    parser.add_argument("--lost-after", type=float, default=None,
                        help="seconds without an event of a started run (default: 3 heartbeat periods)")
    args = parser.parse_args(argv)
    ids = asyncio.run(aensure_recovery(deployment_id=args.deployment_id, tag=args.tag, lost_after=args.lost_after))
    print(f"recovery automations for {args.tag or args.deployment_id}: {', '.join(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
