"""Lost runs of a deployed workflow are rescheduled on their work pool by a Prefect automation.

Prefect's flow engine emits a `prefect.flow-run.heartbeat` event every
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (at least 30) while a run's process lives, Paused
or Running. `deploy` creates (or replaces) one automation per deployment with a proactive
trigger: after a heartbeat of one of its runs, expect another heartbeat or a final state within
`lost_after` seconds; if none comes, the process died (worker killed, machine lost) and the
action sets the run AwaitingRetry with a message saying so. A worker of the pool then runs it
again; finished steps are read back from their persisted results (durable steps).

When the engine itself sees its process being stopped (SIGTERM from a worker shutting down, a
`SystemExit`), it records Crashed with Prefect's terse message; `explain_crash`, the workflow's
`on_crashed` hook, adds a log line on the run in an operator's words.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

LOST_MESSAGE = (
    "The process running this flow run died (worker lost?): no heartbeat for {seconds:g}s. "
    "Rescheduled automatically: a worker of the pool runs it again, reading finished steps back "
    "from their persisted results."
)


def automation_name(flow_name: str, deployment_name: str) -> str:
    return f"beluga: resume lost runs of {flow_name}/{deployment_name}"


def default_lost_after() -> float:
    """Three heartbeats: `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` (at least 30 s) times 3."""
    from prefect.settings import get_current_settings

    frequency = get_current_settings().flows.heartbeat_frequency or 180
    return 3.0 * max(frequency, 30)


async def ensure_lost_run_automation(
    client: Any, flow_name: str, deployment_name: str, deployment_id: Any, lost_after: float
) -> Any:
    """Create the deployment's lost-run automation (replacing an older one); return its id."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    name = automation_name(flow_name, deployment_name)
    for old in await client.read_automations_by_name(name):
        await client.delete_automation(old.id)
    final = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed", "Cancelling")}
    automation = AutomationCore(
        name=name,
        description="Created by prefect-beluga: a run whose process stops sending heartbeats is rescheduled.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.deployment.{deployment_id}"},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *final},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=lost_after),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message=LOST_MESSAGE.format(seconds=lost_after),
                force=True,
            )
        ],
    )
    return await client.create_automation(automation)


CRASH_LOG = (
    "The process running this flow run was stopped before the run finished (worker lost or shut "
    "down?); Prefect recorded: {message!r}. Finished steps keep their persisted results: "
    "{next_step}"
)


def explain_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_crashed` hook: a log line on the crashed run saying what happened and what comes next."""
    from prefect.logging.loggers import flow_run_logger

    if flow_run.deployment_id is not None:
        next_step = (
            "a deployed run is rescheduled by the 'beluga: resume lost runs' automation if its "
            f"process died, or run `prefect flow-run retry {flow_run.id}` to run it again now."
        )
    else:
        next_step = f"run workflow.retry({str(flow_run.id)!r}) from any process to finish it."
    flow_run_logger(flow_run, flow).error(CRASH_LOG.format(message=state.message, next_step=next_step))
