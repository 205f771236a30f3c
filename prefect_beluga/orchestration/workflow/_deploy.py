"""Deploying a workflow to a work pool, or serving it from this process.

Workers load a workflow from a file: `entrypoint` finds the module-level name the workflow is
bound to in the module that created it (recorded when the `Workflow` was made) or the module of
its function, never by scanning every loaded module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError
from prefect_beluga.orchestration.recovery import aensure_recovery, check_lost_after, deployment_scope


def caller_module() -> str | None:
    """The name of the first module up the stack outside this package (who made the workflow)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith("prefect_beluga."):
            return name
        frame = frame.f_back
    return None


class Deployer:
    """A workflow's deployment: looked up, registered on a work pool, or served from this process.

    `owner` is the `Workflow`: `entrypoint` finds the module-level name bound to it in `modules`.
    """

    def __init__(
        self,
        owner: object,
        flow: Flow,
        *,
        deployment_name: str,
        tags: list[str],
        description: str | None,
        modules: tuple[str, ...],
    ) -> None:
        self.owner, self.flow = owner, flow
        self.workflow_id = flow.name
        self.deployment_name, self.tags, self.description = deployment_name, tags, description
        self.modules = modules

    async def read(self, client: Any) -> Any:
        """The deployment on the API (None if there is none)."""
        try:
            return await client.read_deployment_by_name(f"{self.flow.name}/{self.deployment_name}")
        except ObjectNotFound:
            return None

    def entrypoint(self) -> tuple[str, str]:
        """`(directory, "file.py:name.flow")`: where a worker finds the workflow."""
        for module_name in self.modules:
            module = sys.modules.get(module_name)
            file = getattr(module, "__file__", None)
            if not file or not file.endswith(".py"):
                continue
            for attribute, value in list(vars(module).items()):
                if value is self.owner:
                    path = Path(file).resolve()
                    return str(path.parent), f"{path.name}:{attribute}.flow"
        raise ValidationError(
            f"workflow {self.workflow_id!r} must be assigned to a module-level name in the .py file "
            f"that creates it for workers to load it (e.g. `my_workflow = create_workflow(...)` in "
            f"flows/my.py); looked in {', '.join(self.modules) or 'no module'}"
        )

    async def deploy(
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
        """Register the deployment on `work_pool` (see `Workflow.deploy`); return its id."""
        if not isinstance(work_pool, str) or not work_pool:
            raise ValidationError(f"work_pool must be a work pool name, got {work_pool!r}")
        lost_after = check_lost_after(lost_after)
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
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(directory)}}],
                parameter_openapi_schema=parameter_schema(self.flow).model_dump(mode="json"),
                enforce_parameter_schema=False,
                job_variables=job_variables or {},
                tags=self.tags,
                description=self.description,
            )
            if resume_lost_runs:
                await aensure_recovery(
                    deployment_id=deployment_id,
                    work_pool=work_pool,
                    scope=deployment_scope(self.flow.name, self.deployment_name),
                    lost_after=lost_after,
                    client=client,
                )
        return str(deployment_id)

    def serve(self, *, limit: int | None = None) -> None:
        """Serve the workflow from this process (blocks: see `Workflow.serve`)."""
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
            await runner.start()

        run_sync(serve())
