"""Which served workflow a run belongs to, and what its state says (status, the signal it waits for).

Read from the Prefect API on each request (the API is the only state: any replica answers for
any run); only the run -> workflow fact, which never changes, is cached.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from prefect_beluga.orchestration import Workflow

SIGNAL_KEY_PREFIX = "beluga-signal-"  # the pause key of a wait: beluga-signal-<hex of name>-<n>-<8 hex>


class UnknownRun(LookupError):
    """No such run, or not a run of a workflow this app serves."""


@dataclass(frozen=True)
class RunState:
    type: str  # Prefect's state type: RUNNING, PAUSED, COMPLETED, ...
    name: str  # e.g. "Paused", "Completed"
    final: bool
    message: str | None
    pause_key: str | None
    signal: str | None  # the signal a paused run waits for (None: not waiting for one)


def signal_of(pause_key: str | None) -> str | None:
    """The signal name a workflow's pause key names (None for another kind of pause)."""
    if not pause_key or not pause_key.startswith(SIGNAL_KEY_PREFIX):
        return None
    hex_name = pause_key[len(SIGNAL_KEY_PREFIX):].split("-", 1)[0]
    try:
        return bytes.fromhex(hex_name).decode()
    except ValueError:
        return None


class RunDirectory:
    """The served workflows by id, and the run -> workflow lookups."""

    def __init__(self, workflows: dict[str, Workflow], cache_size: int = 10_000) -> None:
        self.workflows = workflows
        self._by_flow = {wf.flow.name: wf for wf in workflows.values()}
        self._cache: OrderedDict[str, Workflow] = OrderedDict()
        self._cache_size = cache_size
        self._watched: dict[str, tuple[float, asyncio.Future[RunState]]] = {}  # see `watched_state`

    def remember(self, run_id: str, workflow: Workflow) -> None:
        self._cache[run_id] = workflow
        self._cache.move_to_end(run_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def resolve(self, run_id: str) -> tuple[Workflow, RunState]:
        """The run's workflow and current state.

        Raises:
            UnknownRun: not a run id, no such run, or a run of a workflow this app does not serve.
        """
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        try:
            run_uuid = uuid.UUID(run_id)
        except ValueError:
            raise UnknownRun(f"no run {run_id!r}: not a run id") from None
        async with get_client() as client:
            try:
                flow_run = await client.read_flow_run(run_uuid)
            except ObjectNotFound:
                raise UnknownRun(f"no run {run_id!r}") from None
            workflow = self._cache.get(run_id)
            if workflow is None:
                flow = await client.read_flow(flow_run.flow_id)
                workflow = self._by_flow.get(flow.name)
                if workflow is None:
                    raise UnknownRun(f"no run {run_id!r} of a workflow this app serves")
                self.remember(run_id, workflow)
        return workflow, state_of(flow_run)

    async def watched_state(self, run_id: str, max_age: float = 0.25) -> RunState:
        """`state(run_id)`, read at most once per `max_age` seconds for all the streams of the
        run (each client's stream looks at its run's state every 0.5 s: 50 clients of one run
        were 100 reads a second)."""
        now = time.monotonic()
        for key, (at, done) in list(self._watched.items()):
            if now - at >= max_age and done.done():
                del self._watched[key]
        entry = self._watched.get(run_id)
        if entry is None or now - entry[0] >= max_age:
            entry = self._watched[run_id] = (now, asyncio.ensure_future(self.state(run_id)))
        return await asyncio.shield(entry[1])

    async def state(self, run_id: str) -> RunState:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return state_of(await client.read_flow_run(uuid.UUID(run_id)))


def state_of(flow_run: Any) -> RunState:
    state = flow_run.state
    if state is None:
        return RunState("UNKNOWN", "Unknown", False, None, None, None)
    pause_key = getattr(state.state_details, "pause_key", None) if state.is_paused() else None
    return RunState(
        type=state.type.value,
        name=state.name,
        final=state.is_final(),
        message=state.message,
        pause_key=pause_key,
        signal=signal_of(pause_key),
    )


def prefect_url(run_id: str) -> str | None:
    """The run's page in the Prefect UI (None when the API has no UI, e.g. the ephemeral one)."""
    try:
        from prefect.utilities.urls import url_for

        return url_for("flow-run", obj_id=run_id)
    except Exception:  # noqa: BLE001 - a link is a nicety, never an error
        return None
