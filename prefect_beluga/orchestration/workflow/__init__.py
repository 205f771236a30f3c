"""Workflows: a Prefect flow around your function, executed now and read back from anywhere.

    ```python
    from prefect_beluga import Orchestrator
    def my_workflow(input):
        return {"output": input["input"].upper()}
    workflow = Orchestrator().create_workflow(my_workflow, workflow_id="my-workflow")
    workflow_id, run_id = workflow.execute({"input": "test"})   # returns at once
    workflow.get_result(workflow_id, run_id)                    # waits; any process
    # {'output': 'TEST'}
    ```

A workflow is a Prefect flow named `workflow_id` whose result is persisted. `execute` creates a
flow run and returns `(workflow_id, run_id)` at once:

- deployed (`deploy(work_pool=...)` or `serve()`): through the deployment
  (`run_deployment(timeout=0)`); a worker of the pool, or the serving process, runs it;
- not deployed: a background runner in this process runs it (the run is an ordinary flow run
  in the Prefect API: the UI shows it, `get_result` works from another process).

Chain and graph steps inside a workflow run persist their results under keys tied to the run
(see `tasks.WorkflowRunScoped`): `retry(run_id)` of a run whose process died finishes it
without recomputing the steps that had finished. Signals and progress: see `signals.py`.

The package is split by job: `_definition` (the `Workflow`, which holds a `Runs` and a
`Deployer`), `_flow` (its Prefect flow), `_runs` (creating, reading and operating runs),
`_deploy` (deploy and serve) and `_background` (the runner that executes runs of this process).
"""

from prefect_beluga.orchestration.workflow._definition import Workflow
from prefect_beluga.orchestration.workflow._runs import WorkflowRun

__all__ = ["Workflow", "WorkflowRun"]
