"""A front door for apps: runs over HTTP, live events as AG-UI over Server-Sent Events, approvals,
and a chat page.

```python
import os
import secrets

from prefect_beluga import Chain, Orchestrator


def support(state):
    return {"output": f"On it: {state['input']}."}


workflow = Orchestrator().create_workflow(Chain([support], name="support"), workflow_id="support")

# Before: a Python caller in a process on the Prefect API
wf_id, run_id = workflow.execute({"input": "Refund order A1"}, stream=True)
for event in workflow.stream(run_id): ...

# After: any browser or app, through an ASGI app (any number of replicas; the Prefect API is the state)
from prefect_beluga.server import create_app
app = create_app(workflows=[workflow], token=os.environ.get("APP_TOKEN") or secrets.token_urlsafe())
#   POST /runs {"workflow_id": "support", "input": {"input": "Refund order A1"}}  -> {"run_id": ...}
#   GET  /runs/<id>/events   (text/event-stream of AG-UI events; Last-Event-ID resumes)
#   POST /runs/<id>/signals/approve:refund {"approved": true}
```

`python -m prefect_beluga.server --workflow module:attr` serves it with uvicorn. Extra: `server`
(Starlette, uvicorn, `ag-ui-protocol`). See docs/server.md.
"""

from prefect_beluga.server._app import create_app

__all__ = ["create_app"]
