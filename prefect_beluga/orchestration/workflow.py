"""Workflows: a Prefect flow around your function, executed now and read back from anywhere.

    >>> from prefect_beluga import Orchestrator
    >>> def my_workflow(input):
    ...     return {"output": input["input"].upper()}
    >>> workflow = Orchestrator().create_workflow(my_workflow, workflow_id="my-workflow")
    >>> workflow_id, run_id = workflow.execute({"input": "test"})   # returns at once
    >>> workflow.get_result(workflow_id, run_id)                    # waits; any process
    {'output': 'TEST'}

A workflow is a Prefect flow named `workflow_id` whose result is persisted. `execute` creates a
flow run and returns `(workflow_id, run_id)` at once:

- deployed (`deploy(work_pool=...)` or `serve()`): through the deployment
  (`run_deployment(timeout=0)`); a worker of the pool, or the serving process, runs it;
- not deployed: a background runner in this process runs it (the run is an ordinary flow run
  in the Prefect API: the UI shows it, `get_result` works from another process).

Chain and graph steps inside a workflow run persist their results under keys tied to the run
(see `tasks.WorkflowRunScoped`): `retry(run_id)` of a run whose process died finishes it
without recomputing the steps that had finished. Signals and progress: see `signals.py`.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import json
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import FlowRunContext, SettingsContext
from prefect.exceptions import ObjectNotFound
from prefect.states import AwaitingRetry, Cancelled, Cancelling, Scheduled

from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import (
    UnknownWorkflowRun,
    ValidationError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
    WorkflowNotDeployed,
    WorkflowTimeout,
)
from prefect_beluga.core.runnable import coerce_to_runnable
from prefect_beluga.orchestration.signals import (
    check_signal_name,
    read_published,
    signal_key,
)
from prefect_beluga.orchestration.tasks import durable_run

_BAD_NAME = re.compile(r"[/%&<>]")
# Seconds between looks at a run's state while waiting for it.
_POLL = 0.25


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


class Workflow:
    """A long-running, durable unit of work: a Prefect flow (and, once deployed, a deployment).

    Args:
        fn: What the workflow runs on its input: a sync or async function taking the input dict,
            a `Runnable`, a `Chain`, a `Graph`, or a Prefect `@flow` (then the input dict holds
            its parameters, or is passed whole to a flow with a single `input` parameter).
        workflow_id: The workflow's name: the Prefect flow (and default deployment) name.
            Defaults to the function's name.
        retries: Prefect flow retries (extra attempts) when the run fails.
        retry_delay: Seconds between those attempts.
        timeout: Seconds a run may take (Prefect's flow `timeout_seconds`).
        result_storage: Where results are persisted: a saved Prefect filesystem block or its
            slug (e.g. ``"local-file-system/results"``). Default: Prefect's default result
            storage (``PREFECT_LOCAL_STORAGE_PATH``), which processes on one machine share.
        distributed: Only ever run through a deployment: `execute` raises
            `WorkflowNotDeployed` instead of running in this process.
        deployment_name: The deployment's name (default `workflow_id`).
        tags: Tags for every run.
        description: Shown in the Prefect UI.

    Examples:
        Embedded (a background runner in this process):

        >>> wf = Orchestrator().create_workflow(my_chain, workflow_id="rag", retries=1)
        >>> wf_id, run_id = wf.execute({"input": "What is ML?"}, idempotency_key="q-42")
        >>> wf.get_result(wf_id, run_id, timeout=60)

        Distributed (workers of a process work pool run it, on any machine):

        >>> wf.deploy(work_pool="my-pool")      # then: prefect worker start --pool my-pool
        >>> wf_id, run_id = wf.execute({"input": "..."})
    """

    def __init__(
        self,
        fn: Any,
        *,
        workflow_id: str | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        result_storage: Any = None,
        distributed: bool = False,
        deployment_name: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        description: str | None = None,
    ) -> None:
        if workflow_id is None:
            workflow_id = getattr(fn, "name", None) or getattr(fn, "__name__", None)
        if not isinstance(workflow_id, str) or not workflow_id.strip() or _BAD_NAME.search(workflow_id):
            raise ValidationError(
                f"workflow_id must be a non-empty string without / % & < >, got {workflow_id!r}"
            )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValidationError(f"retries must be an int >= 0, got {retries!r}")
        if not isinstance(retry_delay, (int, float)) or retry_delay < 0:
            raise ValidationError(f"retry_delay must be seconds >= 0, got {retry_delay!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or not timeout > 0):
            raise ValidationError(f"timeout must be > 0 seconds, got {timeout!r}")
        if deployment_name is not None and (not deployment_name or _BAD_NAME.search(deployment_name)):
            raise ValidationError(f"deployment_name must be a non-empty name without / % & < >, got {deployment_name!r}")
        self.workflow_id = workflow_id
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.result_storage = result_storage
        self.distributed = distributed
        self.deployment_name = deployment_name or workflow_id
        self.tags = list(tags)
        self.description = description
        self._takes_input = True
        self.flow = self._build_flow(fn)
        self._deployed = False

    # -- the flow --------------------------------------------------------------------------------

    def _build_flow(self, fn: Any) -> Flow:
        options: dict[str, Any] = dict(
            name=self.workflow_id,
            retries=self.retries,
            retry_delay_seconds=self.retry_delay,
            timeout_seconds=self.timeout,
            persist_result=True,
            result_storage=self.result_storage,
            validate_parameters=False,
        )
        if self.description is not None:
            options["description"] = self.description
        if isinstance(fn, Flow):
            user_fn = fn.fn
            self._takes_input = list(inspect.signature(user_fn).parameters) == ["input"]
            flow = fn.with_options(**options)
            if inspect.iscoroutinefunction(user_fn):

                @functools.wraps(user_fn)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    with _durable():
                        return await user_fn(*args, **kwargs)

                flow.fn = run_async
            else:

                @functools.wraps(user_fn)
                def run_sync_fn(*args: Any, **kwargs: Any) -> Any:
                    with _durable():
                        return user_fn(*args, **kwargs)

                flow.fn = run_sync_fn
            return flow
        runnable = coerce_to_runnable(fn, where=f"workflow {self.workflow_id!r}")

        async def run(input: dict[str, Any]) -> Any:
            with _durable():
                return await runnable.ainvoke(input)

        run.__qualname__ = run.__name__ = re.sub(r"\W", "_", self.workflow_id)
        return Flow(run, **options)

    def _parameters(self, input: Any) -> dict[str, Any]:
        if isinstance(input, str):
            input = {"input": input}
        if not isinstance(input, dict):
            raise ValidationError(
                f"workflow {self.workflow_id!r}: input must be a dict (or a str, read as "
                f"{{'input': s}}), got {type(input).__name__}"
            )
        try:
            json.dumps(input)
        except (TypeError, ValueError) as exc:
            bad = next((k for k, v in input.items() if not _json_ok(v)), None)
            where = f" (key {bad!r} holds a {type(input[bad]).__name__})" if bad is not None else ""
            raise ValidationError(
                f"workflow {self.workflow_id!r}: input must be JSON-serialisable, because it is "
                f"sent to the Prefect API as the run's parameters{where}: {exc}"
            ) from None
        return {"input": input} if self._takes_input else input

    # -- execute ---------------------------------------------------------------------------------

    def execute(self, input: Any, idempotency_key: str | None = None) -> tuple[str, str]:
        """Start a run on `input`; return `(workflow_id, run_id)` at once.

        The same `idempotency_key` never creates a second run: the first run's ids come back.
        """
        return run_sync(self.aexecute(input, idempotency_key=idempotency_key))

    async def aexecute(self, input: Any, idempotency_key: str | None = None) -> tuple[str, str]:
        """Async twin of `execute`."""
        parameters = self._parameters(input)
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key):
            raise ValidationError(f"idempotency_key must be a non-empty string, got {idempotency_key!r}")
        async with get_client() as client:
            deployment = None
            if self._deployed or self.distributed:
                deployment = await self._read_deployment(client)
            if deployment is None and self.distributed:
                raise WorkflowNotDeployed(
                    f"workflow {self.workflow_id!r} is distributed but has no deployment "
                    f"{self.deployment_name!r} on the Prefect API at {client.api_url}: call "
                    f"workflow.deploy(work_pool=...) or workflow.serve() first, or create it with "
                    f"distributed=False to run it in this process",
                    workflow_id=self.workflow_id,
                )
            if deployment is not None:
                from prefect.deployments import run_deployment

                flow_run = await run_deployment(
                    name=deployment.id,
                    parameters=parameters,
                    timeout=0,
                    idempotency_key=idempotency_key,
                    tags=self.tags or None,
                    client=client,
                    as_subflow=False,
                )
                return self.workflow_id, str(flow_run.id)
            flow_run, created = await self._create_run(client, parameters, idempotency_key)
        if created:
            _runner().submit(self, flow_run, parameters)
        return self.workflow_id, str(flow_run.id)

    async def _create_run(
        self, client: Any, parameters: dict[str, Any], idempotency_key: str | None
    ) -> tuple[FlowRun, bool]:
        """Create a flow run (the API dedupes by idempotency key); True if this call created it."""
        from prefect.client.schemas.actions import FlowCreate, FlowRunCreate
        from prefect.client.schemas.objects import FlowRunPolicy
        from prefect.states import to_state_create

        name = f"{self.workflow_id}-{uuid.uuid4().hex[:10]}"
        reply = await client.request("POST", "/flows/", json=FlowCreate(name=self.flow.name).model_dump(mode="json"))
        create = FlowRunCreate(
            flow_id=reply.json()["id"],
            name=name,
            parameters=parameters,
            tags=self.tags,
            state=to_state_create(Scheduled()),
            idempotency_key=idempotency_key,
            empirical_policy=FlowRunPolicy(retries=self.retries, retry_delay=int(self.retry_delay)),
        )
        reply = await client.request("POST", "/flow_runs/", json=create.model_dump(mode="json", exclude_unset=True))
        flow_run = FlowRun.model_validate(reply.json())
        flow_run.parameters = parameters
        return flow_run, flow_run.name == name

    # -- results ---------------------------------------------------------------------------------

    def get_result(self, workflow_id: str, run_id: str, timeout: float | None = None) -> Any:
        """Wait for the run to finish and return its output (read from persisted results).

        Raises:
            UnknownWorkflowRun: no such run, or it is not a run of `workflow_id`.
            WorkflowFailed: the run failed or crashed (`cause` is why).
            WorkflowCancelled: it was cancelled or terminated.
            WorkflowTimeout: it had not finished after `timeout` seconds (it goes on).
        """
        return run_sync(self.aget_result(workflow_id, run_id, timeout=timeout))

    async def aget_result(self, workflow_id: str, run_id: str, timeout: float | None = None) -> Any:
        """Async twin of `get_result`."""
        if workflow_id != self.workflow_id:
            raise UnknownWorkflowRun(
                f"unknown workflow {workflow_id!r}: this is workflow {self.workflow_id!r}",
                workflow_id=workflow_id,
                run_id=str(run_id),
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        async with get_client() as client:
            while True:
                flow_run = await self._read_run(client, run_id)
                state = flow_run.state
                if state is not None and state.is_final():
                    return await self._outcome(flow_run)
                if deadline is not None and time.monotonic() >= deadline:
                    raise WorkflowTimeout(
                        f"workflow {self.workflow_id!r} run {run_id} not finished after {timeout}s "
                        f"(state {state.name if state else 'unknown'}); it goes on",
                        workflow_id=self.workflow_id,
                        run_id=str(run_id),
                    )
                await asyncio.sleep(_POLL)

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

    async def _read_run(self, client: Any, run_id: Any) -> FlowRun:
        try:
            run_uuid = uuid.UUID(str(run_id))
            flow_run = await client.read_flow_run(run_uuid)
        except (ValueError, ObjectNotFound):
            raise UnknownWorkflowRun(
                f"workflow {self.workflow_id!r} has no run {run_id!r} on the Prefect API at {client.api_url}",
                workflow_id=self.workflow_id,
                run_id=str(run_id),
            ) from None
        flow = await client.read_flow(flow_run.flow_id)
        if flow.name != self.flow.name:
            raise UnknownWorkflowRun(
                f"run {run_id} is a run of {flow.name!r}, not of workflow {self.workflow_id!r}",
                workflow_id=self.workflow_id,
                run_id=str(run_id),
            )
        return flow_run

    # -- operations ------------------------------------------------------------------------------

    def status(self, run_id: str) -> str:
        """The run's state type: SCHEDULED, PENDING, RUNNING, PAUSED, COMPLETED, FAILED, CANCELLING, CANCELLED or CRASHED."""
        return run_sync(self.astatus(run_id))

    async def astatus(self, run_id: str) -> str:
        async with get_client() as client:
            flow_run = await self._read_run(client, run_id)
        return flow_run.state.type.value if flow_run.state else "UNKNOWN"

    def cancel(self, run_id: str) -> None:
        """Cancel gracefully: the run goes to Cancelling, its runner stops it, it ends Cancelled."""
        run_sync(self.acancel(run_id))

    async def acancel(self, run_id: str, *, message: str = "cancelled") -> None:
        async with get_client() as client:
            flow_run = await self._read_run(client, run_id)
            state = flow_run.state
            if state is None or state.is_final():
                return
            if state.type in (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED):
                # Nothing runs it yet (or it waits): no runner to stop, cancel it outright.
                await client.set_flow_run_state(flow_run.id, Cancelled(message=message), force=True)
                _runner().stop(flow_run.id)
                return
            await client.set_flow_run_state(flow_run.id, Cancelling(message=message), force=True)
        _runner().stop(flow_run.id)  # a run of this process: stop it now

    def terminate(self, run_id: str, reason: str = "terminated") -> None:
        """Stop the run forcefully: it ends Cancelled (named "Terminated") with `reason` now.

        A run of this process is stopped at once; a worker's run is asked to stop (Cancelling,
        which kills its process) and is marked Terminated whatever it does.
        """
        run_sync(self.aterminate(run_id, reason))

    async def aterminate(self, run_id: str, reason: str = "terminated") -> None:
        async with get_client() as client:
            flow_run = await self._read_run(client, run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return
            if flow_run.state is not None and flow_run.state.is_running():
                await client.set_flow_run_state(flow_run.id, Cancelling(message=reason), force=True)
            _runner().stop(flow_run.id)
            await client.set_flow_run_state(
                flow_run.id, Cancelled(name="Terminated", message=reason), force=True
            )

    def signal(self, run_id: str, name: str, payload: Any = None, *, wait: float = 30.0) -> None:
        """Send the signal `name` with `payload` to a run waiting in `wait_for_signal(name)`.

        Waits up to `wait` seconds for the run to reach that wait (a signal is not queued).
        """
        run_sync(self.asignal(run_id, name, payload, wait=wait))

    async def asignal(self, run_id: str, name: str, payload: Any = None, *, wait: float = 30.0) -> None:
        check_signal_name(name)
        try:
            json.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"signal {name!r}: payload must be JSON-serialisable: {exc}") from None
        deadline = time.monotonic() + wait
        async with get_client() as client:
            while True:
                flow_run = await self._read_run(client, run_id)
                state = flow_run.state
                if state is not None and state.is_final():
                    raise WorkflowError(
                        f"cannot signal {name!r}: workflow {self.workflow_id!r} run {run_id} already ended {state.name}",
                        workflow_id=self.workflow_id,
                        run_id=str(run_id),
                    )
                if (
                    state is not None
                    and state.is_paused()
                    and state.state_details.pause_key == signal_key(name)
                ):
                    reply = await client.resume_flow_run(flow_run.id, run_input={"payload": payload})
                    if reply.status.value == "ACCEPT":
                        return
                if time.monotonic() >= deadline:
                    raise WorkflowTimeout(
                        f"workflow {self.workflow_id!r} run {run_id} was not waiting for signal "
                        f"{name!r} within {wait}s (state {state.name if state else 'unknown'})",
                        workflow_id=self.workflow_id,
                        run_id=str(run_id),
                    )
                await asyncio.sleep(_POLL)

    def query(self, run_id: str) -> dict[str, Any]:
        """What the run has published with `publish(...)` so far ({} if nothing)."""
        return run_sync(self.aquery(run_id))

    async def aquery(self, run_id: str) -> dict[str, Any]:
        async with get_client() as client:
            flow_run = await self._read_run(client, run_id)
            return await read_published(client, flow_run.id)

    def list_runs(self, limit: int = 100) -> list[WorkflowRun]:
        """This workflow's runs, newest first."""
        return run_sync(self.alist_runs(limit))

    async def alist_runs(self, limit: int = 100) -> list[WorkflowRun]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[self.flow.name])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
            )
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
            idempotency_key=run.idempotency_key,
        )

    def retry(self, run_id: str) -> tuple[str, str]:
        """Run an unfinished, failed or crashed run again, as the same run.

        Steps that had finished (and persisted their results) are not recomputed. A deployed
        run goes back to its work pool; otherwise this process's background runner takes it.
        """
        return run_sync(self.aretry(run_id))

    async def aretry(self, run_id: str) -> tuple[str, str]:
        async with get_client() as client:
            flow_run = await self._read_run(client, run_id)
            if flow_run.state is not None and flow_run.state.is_completed():
                return self.workflow_id, str(flow_run.id)
            await client.set_flow_run_state(flow_run.id, AwaitingRetry(), force=True)
            flow_run = await client.read_flow_run(flow_run.id)
        if flow_run.deployment_id is None:
            _runner().submit(self, flow_run, flow_run.parameters)
        return self.workflow_id, str(flow_run.id)

    # -- deployment ------------------------------------------------------------------------------

    async def _read_deployment(self, client: Any) -> Any:
        try:
            return await client.read_deployment_by_name(f"{self.flow.name}/{self.deployment_name}")
        except ObjectNotFound:
            return None

    def entrypoint(self) -> tuple[str, str]:
        """`(directory, "file.py:name.flow")`: where a worker finds this workflow.

        The workflow must be bound to a module-level name of an importable file.
        """
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if not file or not file.endswith(".py"):
                continue
            for attribute, value in list(vars(module).items()):
                if value is self:
                    path = Path(file).resolve()
                    return str(path.parent), f"{path.name}:{attribute}.flow"
        raise ValidationError(
            f"workflow {self.workflow_id!r} must be assigned to a module-level name in a .py file "
            f"for workers to load it (e.g. `my_workflow = create_workflow(...)` in flows/my.py)"
        )

    def deploy(
        self,
        work_pool: str,
        *,
        work_queue: str | None = None,
        job_variables: dict[str, Any] | None = None,
        entrypoint: str | None = None,
        directory: str | None = None,
    ) -> str:
        """Register a deployment of this workflow on `work_pool`; return its id.

        Workers (`prefect worker start --pool <work_pool>`) then run every `execute`. A process
        pool needs no image: workers load the workflow from `directory`/`entrypoint` (found
        from where this workflow is defined, e.g. ``("flows", "review.py:review.flow")``).
        """
        return run_sync(
            self.adeploy(
                work_pool,
                work_queue=work_queue,
                job_variables=job_variables,
                entrypoint=entrypoint,
                directory=directory,
            )
        )

    async def adeploy(
        self,
        work_pool: str,
        *,
        work_queue: str | None = None,
        job_variables: dict[str, Any] | None = None,
        entrypoint: str | None = None,
        directory: str | None = None,
    ) -> str:
        if not isinstance(work_pool, str) or not work_pool:
            raise ValidationError(f"work_pool must be a work pool name, got {work_pool!r}")
        if entrypoint is None or directory is None:
            found_dir, found_entry = self.entrypoint()
            directory = directory or found_dir
            entrypoint = entrypoint or found_entry
        from prefect.utilities.callables import parameter_schema

        async with get_client() as client:
            try:
                await client.read_work_pool(work_pool)
            except ObjectNotFound:
                raise ValidationError(
                    f"no work pool {work_pool!r} on the Prefect API at {client.api_url}: create it "
                    f"(prefect work-pool create {work_pool} --type process)"
                ) from None
            flow_id = await client.create_flow_from_name(self.flow.name)
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                name=self.deployment_name,
                work_pool_name=work_pool,
                work_queue_name=work_queue,
                entrypoint=entrypoint,
                pull_steps=[
                    {"prefect.deployments.steps.set_working_directory": {"directory": str(directory)}}
                ],
                parameter_openapi_schema=parameter_schema(self.flow).model_dump(mode="json"),
                enforce_parameter_schema=False,
                job_variables=job_variables or {},
                tags=self.tags,
                description=self.description,
            )
        self._deployed = True
        return str(deployment_id)

    def serve(self, *, limit: int | None = None) -> None:
        """Serve this workflow from this process (blocks): a Prefect runner runs every `execute`.

        Other processes create the workflow with `distributed=True` (or call `execute` here
        from another thread) and the runs go through the served deployment.
        """
        from prefect.runner import Runner

        directory, entrypoint = self.entrypoint()
        file, _, attribute = entrypoint.partition(":")
        deployment = self.flow.to_deployment(name=self.deployment_name, tags=self.tags)
        # Relative to this process's directory, where the runner starts its flow runs. (A
        # deployment `path` elsewhere would make Prefect copy that folder into it on every run.)
        deployment.entrypoint = f"{os.path.relpath(Path(directory, file))}:{attribute}"
        runner = Runner(name=f"{self.workflow_id}-runner", limit=limit)

        async def serve() -> None:
            await runner.aadd_deployment(deployment)
            self._deployed = True
            await runner.start()

        run_sync(serve())

    def __repr__(self) -> str:
        return f"Workflow({self.workflow_id!r})"


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


class _durable:
    """Within a workflow's flow run: steps persist results under run-scoped cache keys."""

    def __enter__(self) -> None:
        context = FlowRunContext.get()
        run_id = str(context.flow_run.id) if context and context.flow_run else None
        self._token = durable_run.set(run_id)

    def __exit__(self, *exc_info: object) -> None:
        durable_run.reset(self._token)


class _BackgroundRunner:
    """Runs workflow flow runs of this process on one event loop in a daemon thread.

    Each run is also watched: when its state turns Cancelling (from any process), it is stopped
    and marked Cancelled.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runs: dict[uuid.UUID, asyncio.Task[Any]] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, name="beluga-workflows", daemon=True)
        self.thread.start()
        atexit.register(self.drain)

    def submit(self, workflow: Workflow, flow_run: FlowRun, parameters: dict[str, Any]) -> None:
        settings = SettingsContext.get()
        profile, values = (settings.profile, settings.settings) if settings else (None, None)

        async def run() -> None:
            if values is not None:
                with SettingsContext(profile=profile, settings=values):
                    await self._run(workflow, flow_run, parameters)
            else:
                await self._run(workflow, flow_run, parameters)

        def start() -> None:
            task = self.loop.create_task(run())
            self.runs[flow_run.id] = task
            task.add_done_callback(lambda _: self.runs.pop(flow_run.id, None))

        # A fresh context: the caller's flow run (if any) is not this run's parent.
        import contextvars

        contextvars.Context().run(self.loop.call_soon_threadsafe, start)

    async def _run(self, workflow: Workflow, flow_run: FlowRun, parameters: dict[str, Any]) -> None:
        from prefect.flow_engine import run_flow, run_flow_async

        watcher = asyncio.create_task(self._watch(flow_run.id))
        try:
            if workflow.flow.isasync:
                await run_flow_async(workflow.flow, flow_run=flow_run, parameters=parameters, return_type="state")
            else:  # a sync @flow: on a thread, so this loop keeps serving other runs
                await asyncio.to_thread(
                    run_flow, workflow.flow, flow_run=flow_run, parameters=parameters, return_type="state"
                )
        except asyncio.CancelledError:
            # Stopped on purpose (cancel/terminate): Prefect's engine calls that a crash.
            async with get_client() as client:
                current = await client.read_flow_run(flow_run.id)
                if current.state is None or current.state.type != StateType.CANCELLED:
                    message = (current.state.message if current.state and current.state.is_cancelling() else None)
                    await client.set_flow_run_state(
                        flow_run.id, Cancelled(message=message or "cancelled"), force=True
                    )
        finally:
            watcher.cancel()

    async def _watch(self, run_id: uuid.UUID) -> None:
        async with get_client() as client:
            while True:
                await asyncio.sleep(1.0)
                try:
                    flow_run = await client.read_flow_run(run_id)
                except Exception:
                    continue
                if flow_run.state is not None and flow_run.state.type in (StateType.CANCELLING, StateType.CANCELLED):
                    task = self.runs.get(run_id)
                    if task is not None:
                        task.cancel()
                    return

    def stop(self, run_id: uuid.UUID) -> None:
        """Cancel the run `run_id` if this process runs it; wait briefly for it to stop."""
        done = threading.Event()

        def cancel() -> None:
            task = self.runs.get(run_id)
            if task is None:
                done.set()
                return
            task.add_done_callback(lambda _: done.set())
            task.cancel()

        self.loop.call_soon_threadsafe(cancel)
        if threading.current_thread() is not self.thread:
            done.wait(10)

    def drain(self, timeout: float = 30.0) -> None:
        """At exit: give runs of this process a little time to finish."""
        deadline = time.monotonic() + timeout
        while self.runs and time.monotonic() < deadline:
            time.sleep(0.1)


_runner_lock = threading.Lock()
_the_runner: _BackgroundRunner | None = None


def _runner() -> _BackgroundRunner:
    global _the_runner
    with _runner_lock:
        if _the_runner is None:
            _the_runner = _BackgroundRunner()
        return _the_runner
