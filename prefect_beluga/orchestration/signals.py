"""What a running workflow says to the outside and hears from it: signals and published progress.

Inside a workflow function:

    >>> from prefect_beluga.orchestration.signals import publish, wait_for_signal
    >>> def review(input):
    ...     publish(stage="drafted", words=120)          # what `workflow.query(run_id)` returns
    ...     verdict = wait_for_signal("approval")        # pauses; `workflow.signal(...)` resumes
    ...     return {"approved": verdict["ok"]}

A signal is Prefect's pause-with-input: the run pauses (state Paused, keyed `signal-<name>`)
until `Workflow.signal(run_id, name, payload)` resumes it with the payload. Because the pause is
keyed, a retried run that had already received the signal gets the same payload back without
pausing again. Published progress is a flow run input (key `beluga-query`) of the run: JSON,
readable from any process on the same Prefect API.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput

from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import ValidationError

QUERY_KEY = "beluga-query"
SIGNAL_KEY_PREFIX = "signal-"

# What each run (by flow run id) has published so far in this process: `publish` merges.
_published: dict[str, dict[str, Any]] = {}


class SignalInput(RunInput):
    """The input a paused workflow waits for: one JSON payload."""

    payload: Any = None


def _current_run_id(what: str) -> str:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise ValidationError(f"{what} can only be called inside a workflow run")
    return str(context.flow_run.id)


def signal_key(name: str) -> str:
    """The pause key of the signal `name`. Prefect keys take only lowercase letters, digits and
    dashes: other names (e.g. "approve:refund_order") get a slug plus a hash of the name."""
    if re.fullmatch(r"[a-z0-9-]+", name):
        return SIGNAL_KEY_PREFIX + name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{SIGNAL_KEY_PREFIX}{slug}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def check_signal_name(name: Any) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "/%&<> "):
        raise ValidationError(f"a signal name must be a non-empty string without spaces or / % & < >, got {name!r}")
    return name


async def await_signal(name: str, *, timeout: float = 3600, poll_interval: float = 1.0) -> Any:
    """Pause this workflow run until the signal `name` arrives; return its payload.

    Args:
        name: The signal's name, as given to `Workflow.signal`.
        timeout: Seconds to wait; then the run fails (Prefect's `FlowPauseTimeout`).
        poll_interval: How often (seconds) the paused run checks whether it was resumed.
    """
    check_signal_name(name)
    _current_run_id("wait_for_signal")
    received = await apause_flow_run(
        wait_for_input=SignalInput,
        timeout=int(timeout),
        poll_interval=poll_interval,  # type: ignore[arg-type]
        key=signal_key(name),
    )
    return received.payload if received is not None else None


def wait_for_signal(name: str, *, timeout: float = 3600, poll_interval: float = 1.0) -> Any:
    """Sync twin of `await_signal`, for sync workflow functions."""
    return run_sync(await_signal(name, timeout=timeout, poll_interval=poll_interval))


async def apublish(values: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """Publish progress for `Workflow.query`: merged into what this run published before.

    Values must be JSON-serialisable. Returns everything published so far.
    """
    from prefect.client.orchestration import get_client

    run_id = _current_run_id("publish")
    update = {**(values or {}), **more}
    merged = {**_published.get(run_id, {}), **update}
    try:
        text = json.dumps(merged)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"published values must be JSON-serialisable: {exc}") from None
    _published[run_id] = merged
    async with get_client() as client:
        try:
            await client.delete_flow_run_input(flow_run_id=run_id, key=QUERY_KEY)
        except (ObjectNotFound, PrefectHTTPStatusError) as exc:
            if not _not_found(exc):
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
            if not _not_found(exc):
                raise
            import asyncio

            await asyncio.sleep(0.05)
    return {}


def _not_found(exc: Exception) -> bool:
    if isinstance(exc, ObjectNotFound):
        return True
    return getattr(getattr(exc, "response", None), "status_code", None) == 404
