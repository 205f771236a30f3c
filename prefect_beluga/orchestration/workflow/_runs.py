"""Runs of a workflow: create them, read their results, and operate them (cancel, signal, retry).

A `Workflow` holds a `Runs`, which talks to the Prefect API about its runs; `WorkflowRun` is
what `list_runs` reports. A workflow with a deployment on the API (looked up on every `execute`)
runs through it; one without (or made with `local=True`) is handed to this process's background
runner (`_background`). Every request goes through `Patience`, so calls wait out an API outage
within their own timeout (see `_patience`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prefect import Flow
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import AwaitingRetry, Cancelled, Cancelling, Scheduled

from prefect_beluga.core import events
from prefect_beluga.core._checks import check_json
from prefect_beluga.core._sync import iterate_sync
from prefect_beluga.core.errors import (
    UnknownWorkflowRun,
    ValidationError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
    WorkflowNotDeployed,
    WorkflowTimeout,
)
from prefect_beluga.orchestration._prefect_internals import create_flow_run_once
from prefect_beluga.orchestration._progress import read_published
from prefect_beluga.orchestration.recovery import recovery_covers
from prefect_beluga.orchestration.signals import check_signal_name, new_sender, send_signal
from prefect_beluga.orchestration.workflow._background import runner
from prefect_beluga.orchestration.workflow._deploy import Deployer
from prefect_beluga.orchestration.workflow._patience import Patience, is_transient
from prefect_beluga.orchestration.workflow._tokens import STREAM_TAG, read_events

# Seconds between looks at a run's state while waiting for it.
_POLL = 0.25
# Seconds a Crashed deployed run is still expected to be rescheduled by the recovery automations.
RESUME_GRACE = 60.0


@dataclass(frozen=True)
class WorkflowRun:
    """One run of a workflow, as `list_runs` reports it."""

    workflow_id: str
    run_id: str
    name: str
    status: str  # Prefect's state type: SCHEDULED, PENDING, RUNNING, PAUSED, COMPLETED, ...
    state_name: str  # e.g. "Completed", "Cached", "Suspended", "Terminated"
    created: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    deployment_id: str | None
    idempotency_key: str | None


class Runs:
    """A workflow's runs on the Prefect API: create them, read them back, operate them.

    A run goes through the workflow's deployment when `deployer` finds one on the API (unless
    `local`), else to this process's background runner (`distributed`: never).
    """

    def __init__(
        self,
        flow: Flow,
        deployer: Deployer,
        *,
        tags: list[str],
        retries: int,
        retry_delay: float,
        distributed: bool,
        local: bool,
    ) -> None:
        self.flow, self.deployer = flow, deployer
        self.workflow_id = flow.name
        self.tags, self.retries, self.retry_delay = tags, retries, retry_delay
        self.distributed, self.local = distributed, local

    # -- execute ---------------------------------------------------------------------------------

    async def aexecute(
        self, parameters: dict[str, Any], idempotency_key: str | None = None, *, stream: bool = False
    ) -> tuple[str, str]:
        """Start a run on the flow's `parameters` (see `Workflow.execute`)."""
        tags = [*self.tags, STREAM_TAG] if stream else list(self.tags)
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key):
            raise ValidationError(f"idempotency_key must be a non-empty string, got {idempotency_key!r}")
        # One name for every try of this call, and the API's idempotency key when the caller gave
        # none: a request retried after its reply was lost (by Prefect's client or by `Patience`)
        # gets back the run its first try created, never a second one.
        name = f"{self.workflow_id}-{uuid.uuid4().hex[:10]}"
        key = idempotency_key or name
        async with Patience(f"execute of workflow {self.workflow_id!r}") as api:
            deployment = None if self.local else await api(self.deployer.read)
            if deployment is None and self.distributed:
                raise WorkflowNotDeployed(
                    f"workflow {self.workflow_id!r} is distributed but has no deployment "
                    f"{self.deployer.deployment_name!r} on the Prefect API at {(await api.client()).api_url}: call "
                    f"workflow.deploy(work_pool=...) or workflow.serve() first, or create it with "
                    f"distributed=False to run it in this process",
                    workflow_id=self.workflow_id,
                )

            async def create(client: Any) -> tuple[FlowRun, bool]:
                if deployment is not None:
                    return await self._create_deployed_run(client, deployment, parameters, key, tags, name)
                return await self._create_run(client, parameters, key, tags, name)

            flow_run, created = await api(create)
        if created and deployment is None:
            flow_run.parameters = parameters
            runner().submit(self.flow, flow_run, parameters)
        return self.workflow_id, str(flow_run.id)

    async def _create_deployed_run(
        self, client: Any, deployment: Any, parameters: dict[str, Any], idempotency_key: str, tags: list[str],
        name: str,
    ) -> tuple[FlowRun, bool]:
        """A run of `deployment` (the API dedupes by idempotency key); True if this call created it."""
        from prefect.deployments import run_deployment

        flow_run = await run_deployment(
            name=deployment.id,
            parameters=parameters,
            flow_run_name=name,
            timeout=0,
            idempotency_key=idempotency_key,
            tags=tags or None,
            client=client,
            as_subflow=False,
        )
        return flow_run, flow_run.name == name

    async def _create_run(
        self, client: Any, parameters: dict[str, Any], idempotency_key: str, tags: list[str], name: str
    ) -> tuple[FlowRun, bool]:
        """Create a flow run named `name` (the API dedupes by idempotency key); True if this call
        created it (the run that comes back has `name`, not another caller's)."""
        from prefect.client.schemas.actions import FlowRunCreate
        from prefect.client.schemas.objects import FlowRunPolicy
        from prefect.states import to_state_create

        flow_id = await client.create_flow_from_name(self.flow.name)
        create = FlowRunCreate(
            flow_id=flow_id,
            name=name,
            parameters=parameters,
            tags=tags,
            state=to_state_create(Scheduled()),
            idempotency_key=idempotency_key,
            empirical_policy=FlowRunPolicy(retries=self.retries, retry_delay=int(self.retry_delay)),
        )
        flow_run = await create_flow_run_once(client, create)
        return flow_run, flow_run.name == name

    # -- results ---------------------------------------------------------------------------------

    async def aget_result(self, workflow_id: str, run_id: str, timeout: float | None = None) -> Any:
        """Wait for the outcome of the run (see `Workflow.get_result`)."""
        if workflow_id != self.workflow_id:
            raise UnknownWorkflowRun(
                f"unknown workflow {workflow_id!r}: this is workflow {self.workflow_id!r}",
                workflow_id=workflow_id,
                run_id=str(run_id),
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        what = f"get_result of workflow {self.workflow_id!r} run {run_id}"
        async with Patience(what, deadline=deadline) as api:
            check_flow = True
            while True:
                try:
                    flow_run = await api(lambda c, check=check_flow: self._read_run(c, run_id, check_flow=check))
                except Exception as exc:
                    if deadline is None or not is_transient(exc):
                        raise
                    raise WorkflowTimeout(
                        f"workflow {self.workflow_id!r} run {run_id}: no answer from the Prefect API "
                        f"before the timeout of {timeout}s ({type(exc).__name__}); the run goes on",
                        workflow_id=self.workflow_id,
                        run_id=str(run_id),
                    ) from exc
                check_flow = False
                state = flow_run.state
                if state is not None and state.is_final() and not await api(lambda c, r=flow_run: self._resumes(c, r)):
                    return await api(lambda client, run=flow_run: self._outcome(run))
                if deadline is not None and time.monotonic() >= deadline:
                    raise WorkflowTimeout(
                        f"workflow {self.workflow_id!r} run {run_id} not finished after {timeout}s "
                        f"(state {state.name if state else 'unknown'}); it goes on",
                        workflow_id=self.workflow_id,
                        run_id=str(run_id),
                    )
                await asyncio.sleep(_POLL)

    # -- token streams ---------------------------------------------------------------------------

    def stream(self, run_id: str) -> Iterator[dict[str, Any]]:
        """Sync `astream`: iterate in any thread; closing the iterator early stops reading."""
        return iterate_sync(lambda: self.astream(run_id), name=f"stream-{self.workflow_id}")

    async def astream(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """The run's token events, then its end (see `Workflow.astream`)."""
        async with Patience(f"stream of workflow {self.workflow_id!r} run {run_id}") as api:
            flow_run = await api(lambda client: self._read_run(client, run_id))
            if STREAM_TAG in (flow_run.tags or ()):

                async def is_final() -> tuple[bool, int]:
                    current = await api(lambda client: self._read_run(client, run_id, check_flow=False))
                    state = current.state
                    return (state is not None and state.is_final()), max(current.run_count, 1)

                async for update in read_events(api, str(flow_run.id), flow_run.created, is_final):
                    yield update
            while True:
                flow_run = await api(lambda client: self._read_run(client, run_id, check_flow=False))
                final = flow_run.state is not None and flow_run.state.is_final()
                if final and not await api(lambda client, r=flow_run: self._resumes(client, r)):
                    break
                await asyncio.sleep(_POLL)
            outcome = await api(lambda client: self._outcome(flow_run))
        yield {events.END: outcome}

    async def _resumes(self, client: Any, flow_run: FlowRun) -> bool:
        """A Crashed deployed run that the recovery automations are about to reschedule (for
        `RESUME_GRACE` seconds after the crash): waiting callers wait for the run it becomes."""
        state = flow_run.state
        if state is None or not state.is_crashed() or flow_run.deployment_id is None:
            return False
        if (datetime.now(timezone.utc) - state.timestamp).total_seconds() > RESUME_GRACE:
            return False
        return await recovery_covers(client, flow_run, self.flow.name)

    async def _outcome(self, flow_run: FlowRun) -> Any:
        state = flow_run.state
        assert state is not None
        ids = dict(workflow_id=self.workflow_id, run_id=str(flow_run.id))
        if state.is_completed():
            return await state.aresult()
        if state.is_cancelled():
            raise WorkflowCancelled(
                f"workflow {self.workflow_id!r} run {flow_run.id} was {state.name.lower()}"
                + (f": {state.message}" if state.message else ""),
                **ids,
            )
        cause: BaseException | None
        try:
            cause = await state.aresult(raise_on_failure=False)
        except Exception as exc:  # the exception was not persisted (e.g. a crash)
            cause = exc
        if not isinstance(cause, BaseException):
            cause = RuntimeError(state.message or state.name)
        raise WorkflowFailed(
            f"workflow {self.workflow_id!r} run {flow_run.id} ended {state.name}: "
            f"{type(cause).__name__}: {cause}",
            cause=cause,
            **ids,
        )

    async def _read_run(self, client: Any, run_id: Any, *, check_flow: bool = True) -> FlowRun:
        """The run `run_id`, checked (unless `check_flow` is False: already checked) to be one of
        this workflow's."""
        try:
            run_uuid = uuid.UUID(str(run_id))
            flow_run = await client.read_flow_run(run_uuid)
        except (ValueError, ObjectNotFound):
            raise UnknownWorkflowRun(
                f"workflow {self.workflow_id!r} has no run {run_id!r} on the Prefect API at {client.api_url}",
                workflow_id=self.workflow_id,
                run_id=str(run_id),
            ) from None
        if not check_flow:
            return flow_run
        flow = await client.read_flow(flow_run.flow_id)
        if flow.name != self.flow.name:
            raise UnknownWorkflowRun(
                f"run {run_id} is a run of {flow.name!r}, not of workflow {self.workflow_id!r}",
                workflow_id=self.workflow_id,
                run_id=str(run_id),
            )
        return flow_run

    # -- operations ------------------------------------------------------------------------------

    def _patience(self, what: str, run_id: Any) -> Patience:
        """The API client of one call on a run (see `_patience`: it waits out outages)."""
        return Patience(f"{what} of workflow {self.workflow_id!r} run {run_id}")

    async def astatus(self, run_id: str) -> str:
        async with self._patience("status", run_id) as api:
            flow_run = await api(lambda client: self._read_run(client, run_id))
        return flow_run.state.type.value if flow_run.state else "UNKNOWN"

    async def acancel(self, run_id: str, *, message: str = "cancelled") -> None:
        async with self._patience("cancel", run_id) as api:
            flow_run = await api(lambda client: self._read_run(client, run_id))
            state = flow_run.state
            if state is None or state.is_final():
                return
            if state.type in (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED):
                # Nothing runs it yet (or it waits): no runner to stop, cancel it outright.
                await api(lambda client: client.set_flow_run_state(flow_run.id, Cancelled(message=message), force=True))
                await runner().astop(flow_run.id)
                return
            await api(lambda client: client.set_flow_run_state(flow_run.id, Cancelling(message=message), force=True))
        await runner().astop(flow_run.id)  # a run of this process: stop it now

    async def aterminate(self, run_id: str, reason: str = "terminated") -> None:
        async with self._patience("terminate", run_id) as api:
            flow_run = await api(lambda client: self._read_run(client, run_id))
            if flow_run.state is not None and flow_run.state.is_final():
                return
            if flow_run.state is not None and flow_run.state.is_running():
                await api(lambda client: client.set_flow_run_state(flow_run.id, Cancelling(message=reason), force=True))
            await runner().astop(flow_run.id)
            terminated = Cancelled(name="Terminated", message=reason)
            await api(lambda client: client.set_flow_run_state(flow_run.id, terminated, force=True))

    async def asignal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Record the signal for the run (see `Workflow.signal`)."""
        check_signal_name(name)
        check_json(payload, f"signal {name!r}: payload")
        async with self._patience("signal", run_id) as api:
            flow_run = await api(lambda client: self._read_run(client, run_id))
            state = flow_run.state
            if state is not None and state.is_final():
                raise WorkflowError(
                    f"cannot signal {name!r}: workflow {self.workflow_id!r} run {run_id} already ended {state.name}",
                    workflow_id=self.workflow_id,
                    run_id=str(run_id),
                )
            sender = new_sender()  # one per call: a try resent after a lost reply records nothing twice
            await api(lambda client: send_signal(client, flow_run.id, name, payload, sender))

    async def aquery(self, run_id: str) -> dict[str, Any]:
        async with self._patience("query", run_id) as api:
            flow_run = await api(lambda client: self._read_run(client, run_id))
            return await api(lambda client: read_published(client, flow_run.id))

    async def alist_runs(self, limit: int = 100) -> list[WorkflowRun]:
        async with Patience(f"list_runs of workflow {self.workflow_id!r}") as api:
            runs = await api(lambda client: client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[self.flow.name])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
            ))
        return [self._describe(run) for run in runs]

    def _describe(self, run: FlowRun) -> WorkflowRun:
        return WorkflowRun(
            workflow_id=self.workflow_id,
            run_id=str(run.id),
            name=run.name,
            status=run.state.type.value if run.state else "UNKNOWN",
            state_name=run.state.name if run.state else "Unknown",
            created=run.created,
            start_time=run.start_time,
            end_time=run.end_time,
            deployment_id=str(run.deployment_id) if run.deployment_id else None,
            # A run `execute` created without a key carries its own name as the API's key.
            idempotency_key=None if run.idempotency_key == run.name else run.idempotency_key,
        )

    async def aretry(self, run_id: str) -> tuple[str, str]:
        async with self._patience("retry", run_id) as api:
            flow_run = await api(lambda client: self._read_run(client, run_id))
            if flow_run.state is not None and flow_run.state.is_completed():
                return self.workflow_id, str(flow_run.id)
            await api(lambda client: client.set_flow_run_state(flow_run.id, AwaitingRetry(), force=True))
            flow_run = await api(lambda client: client.read_flow_run(flow_run.id))
        if flow_run.deployment_id is None:
            runner().submit(self.flow, flow_run, flow_run.parameters)
        return self.workflow_id, str(flow_run.id)
