"""The `Workflow`: its options, and the Prefect flow that runs the user's function."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

from prefect import Flow

from prefect_beluga.core._checks import check_bool, check_int, check_json, check_name, check_number
from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.core.runnable import coerce_to_runnable
from prefect_beluga.orchestration._usage import budgeted
from prefect_beluga.orchestration._usage import setup as usage_setup
from prefect_beluga.orchestration.recovery import check_resumes, explain_crash
from prefect_beluga.orchestration.workflow._background import durable as _durable
from prefect_beluga.orchestration.workflow._background import runner
from prefect_beluga.orchestration.workflow._deploy import Deployment, caller_module
from prefect_beluga.orchestration.workflow._runs import Runs
from prefect_beluga.usage import UsageLimits
from prefect_beluga.usage import scope as usage_scope


async def _check_resumes() -> None:
    """In a run resumed after crashes: stop a crash loop (see `recovery.check_resumes`)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_run = context.flow_run if context else None
    if flow_run is None or flow_run.run_count <= 1 or flow_run.deployment_id is None:
        return
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await check_resumes(flow_run, client)


class Workflow(Runs, Deployment):
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
        wf = Orchestrator().create_workflow(my_chain, workflow_id="rag", retries=1)
        wf_id, run_id = wf.execute({"input": "What is ML?"}, idempotency_key="q-42")
        wf.get_result(wf_id, run_id, timeout=60)
        ```

        Distributed (workers of a process work pool run it, on any machine):

        ```python
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
        self._takes_input = True
        self.flow = self._build_flow(fn)
        # Where `entrypoint` looks for the module-level name bound to this workflow.
        modules = (
            caller_module(),
            getattr(fn, "__module__", None),
            getattr(getattr(fn, "fn", None), "__module__", None),
        )
        self._modules = tuple(dict.fromkeys(m for m in modules if isinstance(m, str)))

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
            options["on_crashed"] = [*fn.on_crashed_hooks, explain_crash]
            user_fn = fn.fn
            self._takes_input = list(inspect.signature(user_fn).parameters) == ["input"]
            flow = fn.with_options(**options)
            if inspect.iscoroutinefunction(user_fn):

                @functools.wraps(user_fn)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    await _check_resumes()
                    async with budgeted(self.usage_limits, f"workflow {self.workflow_id!r}"):
                        with _durable():
                            return await user_fn(*args, **kwargs)

                flow.fn = run_async
            else:

                @functools.wraps(user_fn)
                def run_sync_fn(*args: Any, **kwargs: Any) -> Any:
                    run_sync(_check_resumes())
                    with usage_scope(self.usage_limits, name=f"workflow {self.workflow_id!r}"), _durable():
                        return user_fn(*args, **kwargs)

                flow.fn = run_sync_fn
            return flow
        runnable = coerce_to_runnable(fn, where=f"workflow {self.workflow_id!r}")

        async def run(input: dict[str, Any]) -> Any:
            await _check_resumes()
            async with budgeted(self.usage_limits, f"workflow {self.workflow_id!r}"):
                with _durable():
                    return await runnable.ainvoke(input)

        run.__qualname__ = run.__name__ = re.sub(r"\W", "_", self.workflow_id)
        return Flow(run, on_crashed=[explain_crash], **options)

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
