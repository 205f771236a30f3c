"""The `Workflow`: its options, and its public methods (its runs, its deployment)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from prefect_beluga.core._checks import check_bool, check_int, check_json, check_name, check_number
from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.orchestration._usage import setup as usage_setup
from prefect_beluga.orchestration.workflow._background import runner
from prefect_beluga.orchestration.workflow._deploy import Deployer, caller_module
from prefect_beluga.orchestration.workflow._flow import build_flow
from prefect_beluga.orchestration.workflow._runs import Runs, WorkflowRun
from prefect_beluga.usage import UsageLimits


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
            `WorkflowNotDeployed` instead of running in this process when there is none.
        local: Always run in this process (its background runner), even when the workflow has
            a deployment on the API. Without it, `execute` looks the deployment
            (``<workflow_id>/<deployment_name>``) up on every call and, if there is one, runs
            through it, whichever process deployed it. Not with `distributed=True`.
        deployment_name: The deployment's name (default `workflow_id`).
        tags: Tags for every run.
        description: Shown in the Prefect UI.
        usage_limits: A `UsageLimits` budget for each run, shared by everything inside it
            (steps, nodes, Map items, agents, retries); `UsageLimitExceeded` ends the run
            (docs/budgets.md).

    Examples:
        Embedded (a background runner in this process):

        ```python
        from prefect_beluga import Chain, Orchestrator

        def answer(state):
            return {"output": f"You asked: {state['input']}"}

        my_chain = Chain([answer], name="rag")
        wf = Orchestrator().create_workflow(my_chain, workflow_id="rag", retries=1)
        wf_id, run_id = wf.execute({"input": "What is ML?"}, idempotency_key="q-42")
        wf.get_result(wf_id, run_id, timeout=60)  # -> {'input': 'What is ML?', 'output': 'You asked: What is ML?'}
        ```

        Distributed (workers of a process work pool run it, on any machine):

        ```python
        # example: not run (needs a process work pool "my-pool" and a worker polling it)
        wf.deploy(work_pool="my-pool")      # then: prefect worker start --pool my-pool
        wf_id, run_id = wf.execute({"input": "..."})   # from this or any other process
        ```

        In this process although a deployment exists (e.g. a debugging session):

        ```python
        local = Orchestrator().create_workflow(my_chain, workflow_id="rag", local=True)
        ```
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
        local: bool = False,
        deployment_name: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        description: str | None = None,
        usage_limits: UsageLimits | None = None,
    ) -> None:
        if workflow_id is None:
            workflow_id = getattr(fn, "name", None) or getattr(fn, "__name__", None)
        check_name(workflow_id, "workflow_id")
        self.usage_limits = usage_setup(usage_limits, fn, f"workflow {workflow_id!r}")
        check_int(retries, "retries")
        check_number(retry_delay, "retry_delay", strict=False, seconds=True)
        check_number(timeout, "timeout", none=True, seconds=True)
        if deployment_name is not None:
            check_name(deployment_name, "deployment_name")
        for flag, value in (("distributed", distributed), ("local", local)):
            check_bool(value, flag)
        if distributed and local:
            raise ValidationError(
                f"workflow {workflow_id!r}: distributed=True (only through a deployment) and local=True "
                f"(only in this process) contradict each other: choose one"
            )
        self.workflow_id = workflow_id
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.result_storage = result_storage
        self.distributed = distributed
        self.local = local
        self.deployment_name = deployment_name or workflow_id
        self.tags = list(tags)
        self.description = description
        options: dict[str, Any] = dict(
            retries=retries,
            retry_delay_seconds=retry_delay,
            timeout_seconds=timeout,
            persist_result=True,
            result_storage=result_storage,
            validate_parameters=False,
        )
        if description is not None:
            options["description"] = description
        self.flow, self._takes_input = build_flow(fn, workflow_id, self.usage_limits, options)
        # Where `entrypoint` looks for the module-level name bound to this workflow.
        modules = (
            caller_module(),
            getattr(fn, "__module__", None),
            getattr(getattr(fn, "fn", None), "__module__", None),
        )
        self._deployer = Deployer(
            self,
            self.flow,
            deployment_name=self.deployment_name,
            tags=self.tags,
            description=description,
            modules=tuple(dict.fromkeys(m for m in modules if isinstance(m, str))),
        )
        self._runs = Runs(
            self.flow,
            self._deployer,
            tags=self.tags,
            retries=retries,
            retry_delay=retry_delay,
            distributed=distributed,
            local=local,
        )

    # -- runs ----------------------------------------------------------------------------------

    def execute(
        self, input: Any, idempotency_key: str | None = None, *, stream: bool = False
    ) -> tuple[str, str]:
        """Start a run on `input`; return `(workflow_id, run_id)` at once.

        If the workflow has a deployment on the Prefect API (`flow name/deployment_name`, looked
        up on every call, whichever process made it), the run goes through it: a worker of its
        pool, or the process serving it, runs it. Otherwise (or with `Workflow(..., local=True)`)
        this process's background runner runs it.

        The same `idempotency_key` never creates a second run: the first run's ids come back.
        An API outage is waited out (`PREFECT_BELUGA_API_PATIENCE`, 120 s by default), and a
        request retried after its reply was lost creates no second run (without a key, the
        run's own name is the API's idempotency key; `list_runs` reports None for it).
        With `stream=True` the run publishes its chat models' tokens as Prefect events, which
        `stream(run_id)` reads from any process on the same Prefect API (docs/streaming.md).
        """
        return run_sync(self.aexecute(input, idempotency_key=idempotency_key, stream=stream))

    async def aexecute(
        self, input: Any, idempotency_key: str | None = None, *, stream: bool = False
    ) -> tuple[str, str]:
        """Async twin of `execute`."""
        return await self._runs.aexecute(self._parameters(input), idempotency_key, stream=stream)

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
        return await self._runs.aget_result(workflow_id, run_id, timeout=timeout)

    def stream(self, run_id: str) -> Iterator[dict[str, Any]]:
        """Sync `astream`: iterate in any thread; closing the iterator early stops reading."""
        return self._runs.stream(run_id)

    def astream(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """Yield a run's token events from its start, then `{"__end__": result}`.

        Works in any process on the same Prefect API, started before, during or after the run:
        what the run published before this call is read back, the rest arrives live through
        Prefect's event subscriber; no event twice, in the order published. Events are
        `{"__token__": {"node", "text"}}` (a node's chunks coalesced to at most ~10 events a
        second) and `{"__retry__": {"node", "attempt"}}`. A run not started with
        `execute(..., stream=True)` yields only its end.

        Raises:
            UnknownWorkflowRun: no such run.
            WorkflowFailed / WorkflowCancelled: the run ended so (after its events).
        """
        return self._runs.astream(run_id)

    def status(self, run_id: str) -> str:
        """The run's state type.

        One of SCHEDULED, PENDING, RUNNING, PAUSED, COMPLETED, FAILED, CANCELLING, CANCELLED or CRASHED.
        """
        return run_sync(self.astatus(run_id))

    async def astatus(self, run_id: str) -> str:
        """Async twin of `status`."""
        return await self._runs.astatus(run_id)

    def cancel(self, run_id: str) -> None:
        """Cancel gracefully: the run goes to Cancelling, its runner stops it, it ends Cancelled."""
        run_sync(self.acancel(run_id))

    async def acancel(self, run_id: str, *, message: str = "cancelled") -> None:
        """Async twin of `cancel` (`message`: the Cancelled state's)."""
        await self._runs.acancel(run_id, message=message)

    def terminate(self, run_id: str, reason: str = "terminated") -> None:
        """Stop the run forcefully: it ends Cancelled (named "Terminated") with `reason` now.

        A run of this process is stopped at once; a worker's run is asked to stop (Cancelling,
        which kills its process) and is marked Terminated whatever it does.
        """
        run_sync(self.aterminate(run_id, reason))

    async def aterminate(self, run_id: str, reason: str = "terminated") -> None:
        """Async twin of `terminate`."""
        await self._runs.aterminate(run_id, reason)

    def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send the signal `name` with `payload` to the run: recorded at once, durably.

        Returns without waiting for the run: its next `wait_for_signal(name)` receives it
        (signals of one name are received one per wait, in the order sent). Fails only if the
        run does not exist or has ended.
        """
        run_sync(self.asignal(run_id, name, payload))

    async def asignal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Async twin of `signal`."""
        await self._runs.asignal(run_id, name, payload)

    def query(self, run_id: str) -> dict[str, Any]:
        """What the run has published with `publish(...)` so far ({} if nothing)."""
        return run_sync(self.aquery(run_id))

    async def aquery(self, run_id: str) -> dict[str, Any]:
        """Async twin of `query`."""
        return await self._runs.aquery(run_id)

    def list_runs(self, limit: int = 100) -> list[WorkflowRun]:
        """This workflow's runs, newest first."""
        return run_sync(self.alist_runs(limit))

    async def alist_runs(self, limit: int = 100) -> list[WorkflowRun]:
        """Async twin of `list_runs`."""
        return await self._runs.alist_runs(limit)

    def retry(self, run_id: str) -> tuple[str, str]:
        """Run an unfinished, failed or crashed run again, as the same run.

        Steps that had finished (and persisted their results) are not recomputed. A deployed
        run goes back to its work pool; otherwise this process's background runner takes it.
        """
        return run_sync(self.aretry(run_id))

    async def aretry(self, run_id: str) -> tuple[str, str]:
        """Async twin of `retry`."""
        return await self._runs.aretry(run_id)

    # -- deployment ----------------------------------------------------------------------------

    def entrypoint(self) -> tuple[str, str]:
        """`(directory, "file.py:name.flow")`: where a worker finds this workflow.

        The workflow must be bound to a module-level name of an importable file: the file that
        created it, or the file of its function.
        """
        return self._deployer.entrypoint()

    def deploy(
        self,
        work_pool: str,
        *,
        work_queue: str | None = None,
        job_variables: dict[str, Any] | None = None,
        entrypoint: str | None = None,
        directory: str | None = None,
        resume_lost_runs: bool = True,
        lost_after: float | None = None,
    ) -> str:
        """Register a deployment of this workflow on `work_pool`; return its id.

        Workers (`prefect worker start --pool <work_pool>`) then run every `execute`. A process
        pool needs no image: workers load the workflow from `directory`/`entrypoint` (found
        from where this workflow is defined, e.g. ``("flows", "review.py:review.flow")``).

        With `resume_lost_runs`, two Prefect automations finish the deployment's runs by
        themselves: a run whose process sent no heartbeat for `lost_after` seconds (default:
        three `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` periods) is marked Crashed, and a Crashed run
        is rescheduled, so another worker finishes it, finished steps read back; a finished
        run is never touched (see `prefect_beluga.orchestration.recovery`).
        """
        return run_sync(
            self.adeploy(
                work_pool,
                work_queue=work_queue,
                job_variables=job_variables,
                entrypoint=entrypoint,
                directory=directory,
                resume_lost_runs=resume_lost_runs,
                lost_after=lost_after,
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
        resume_lost_runs: bool = True,
        lost_after: float | None = None,
    ) -> str:
        """Async twin of `deploy`."""
        return await self._deployer.deploy(
            work_pool,
            work_queue=work_queue,
            job_variables=job_variables,
            entrypoint=entrypoint,
            directory=directory,
            resume_lost_runs=resume_lost_runs,
            lost_after=lost_after,
        )

    def serve(self, *, limit: int | None = None) -> None:
        """Serve this workflow from this process (blocks): a Prefect runner runs every `execute`.

        `execute` in any process on the same API (or here, from another thread) finds the served
        deployment and the runs go through it.
        """
        self._deployer.serve(limit=limit)

    def _parameters(self, input: Any) -> dict[str, Any]:
        if isinstance(input, str):
            input = {"input": input}
        if not isinstance(input, dict):
            raise ValidationError(
                f"workflow {self.workflow_id!r}: input must be a dict (or a str, read as "
                f"{{'input': s}}), got {type(input).__name__}"
            )
        check_json(
            input,
            f"workflow {self.workflow_id!r}: input",
            ", because it is sent to the Prefect API as the run's parameters",
        )
        return {"input": input} if self._takes_input else input

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until the runs this process started in the background have finished or paused.

        A run paused in `wait_for_signal` is not waited for: it stays Paused on the Prefect API
        and a later `signal` plus `retry(run_id)` (from any process) finishes it. Returns True
        if nothing is left running. The same happens at interpreter exit (`timeout` None there
        means: as long as runs are running).
        """
        return runner().drain(timeout)

    def __repr__(self) -> str:
        return f"Workflow({self.workflow_id!r})"
