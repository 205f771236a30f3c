"""What a running workflow publishes for `Workflow.query`: its progress, as JSON.

    ```python
    from prefect_beluga.orchestration import publish
    def review(input):
        publish(stage="drafted", words=120)          # what `workflow.query(run_id)` returns
        return {"done": True}
    ```

Published progress is a flow run input (key `beluga-query`) of the run: JSON, readable from any
process on the same Prefect API. `publish` merges into what the run published before; this
process keeps the merged values of a run until its attempt ends (`forget_published`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from prefect_beluga.core._checks import check_json
from prefect_beluga.core._sync import run_sync
from prefect_beluga.orchestration._run_inputs import current_run_id, not_found

__all__ = ["apublish", "publish", "read_published"]

QUERY_KEY = "beluga-query"

# What each running run (by flow run id) has published so far in this process: `publish` merges.
_published: dict[str, dict[str, Any]] = {}


async def apublish(values: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """Publish progress for `Workflow.query`: merged into what this run published before.

    Values must be JSON-serialisable. Returns everything published so far.
    """
    run_id = current_run_id("publish")
    update = {**(values or {}), **more}
    merged = {**_published.get(run_id, {}), **update}
    text = check_json(merged, "published values")
    _published[run_id] = merged
    async with get_client() as client:
        try:
            await client.delete_flow_run_input(flow_run_id=run_id, key=QUERY_KEY)
        except (ObjectNotFound, PrefectHTTPStatusError) as exc:
            if not not_found(exc):
                raise
        await client.create_flow_run_input(flow_run_id=run_id, key=QUERY_KEY, value=text)
    return merged


def publish(values: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """Sync twin of `apublish`."""
    return run_sync(apublish(values, **more))


async def read_published(client: Any, run_id: Any) -> dict[str, Any]:
    """What the run `run_id` has published ({} if nothing yet)."""
    for _ in range(3):  # a publish replaces the value: delete, then create
        try:
            return json.loads(await client.read_flow_run_input(flow_run_id=run_id, key=QUERY_KEY))
        except (ObjectNotFound, PrefectHTTPStatusError) as exc:
            if not not_found(exc):
                raise
            await asyncio.sleep(0.05)
    return {}


def forget_published(run_id: str) -> None:
    """A run's attempt ends: drop what this process kept of its published values."""
    _published.pop(run_id, None)
