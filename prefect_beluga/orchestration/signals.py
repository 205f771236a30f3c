"""What a running workflow hears from the outside: signals, and waiting for them.

Inside a workflow function:

    ```python
    from prefect_beluga.orchestration import wait_for_signal
    def review(input):
        verdict = wait_for_signal("approval")        # `workflow.signal(...)` delivers it
        return {"approved": verdict["ok"]}
    ```

Signals are durable messages, stored as flow run inputs of the run on the Prefect API (the same
records Prefect's own `send_input` uses). `Workflow.signal(run_id, name, payload)` records the
signal at once and returns: it takes the next free sequence number of that name with a create
that the API refuses for a key that exists (HTTP 409), so senders in several processes never
share or skip a number. The run's k-th `wait_for_signal(name)` (counted from the start of the
run's attempt) reads signal number k of that name: one signal per wait, in the order sent. If it
is there the wait returns at once; otherwise the run goes Paused and checks for it every
`poll_interval` seconds, going back to Running when it arrives. Nothing is deleted, so a run that
is retried after its process died replays its waits: the waits it had passed get the same
payloads again (as its finished steps return their persisted results), and the first wait it had
not passed gets the first signal it had not consumed. Cancelling a paused run ends the wait: at
once when this process runs it (the background runner wakes the wait, `interrupt_wait`), else at
the wait's next poll.

What a run publishes for `Workflow.query` is in `_progress.py`. A run's wait counts here are
dropped when its attempt ends (`reset_waits`), so a long-lived process keeps nothing per finished run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import Abort, ObjectNotFound, PrefectHTTPStatusError
from prefect.logging import get_run_logger
from prefect.states import Paused, Running

from prefect_beluga.core._checks import check_json, check_name
from prefect_beluga.core._sync import run_sync
from prefect_beluga.core.errors import WorkflowTimeout
from prefect_beluga.orchestration._progress import apublish, publish, read_published  # public here too
from prefect_beluga.orchestration._run_inputs import current_run_id, not_found

__all__ = [
    "apublish",
    "await_for_signal",
    "interrupt_wait",
    "publish",
    "read_published",
    "send_signal",
    "wait_for_signal",
    "wait_loop",
]

_log = logging.getLogger("prefect_beluga.workflow")
SIGNAL_KEY_PREFIX = "beluga-signal-"

# How many waits of each signal name each run (by flow run id) has begun in this attempt.
_waits: dict[str, dict[str, int]] = {}
_waits_lock = threading.Lock()
# Runs of this process paused in a wait (flow run id -> signal name), and whether the process is
# exiting: then waits stop polling and their runs stay Paused (see `Workflow.drain`).
_paused: dict[str, str] = {}
_exiting = threading.Event()


class _Waker:
    """Wakes a paused wait before its next poll, from any thread (see `interrupt_wait`)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.stopped = False  # this process stops the run (cancel / terminate)

    def wake(self, *, stop: bool) -> None:
        self.stopped = self.stopped or stop
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.event.set)

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or less if woken."""
        try:
            await asyncio.wait_for(self.event.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self.event.clear()


# The waker of each run of this process paused in a wait (flow run id -> waker).
_wakers: dict[str, _Waker] = {}


def wait_loop(run_id: str) -> asyncio.AbstractEventLoop | None:
    """The event loop the wait run `run_id` is paused in polls on (None: no such wait here)."""
    waker = _wakers.get(run_id)
    return waker.loop if waker is not None else None


def interrupt_wait(run_id: str, *, stop: bool = True) -> bool:
    """Wake the wait run `run_id` is paused in (in this process) now, not at its next poll.

    With `stop`, the wait ends the run as a cancel does (`WaitCancelled`), whatever its state
    on the API says yet: this process is cancelling or terminating it. Without, the wait just
    looks at the API again (e.g. a state change seen elsewhere). False: no such wait here."""
    waker = _wakers.get(run_id)
    if waker is None:
        return False
    waker.wake(stop=stop)
    return True


def paused_runs() -> dict[str, str]:
    """The runs of this process paused waiting for a signal: flow run id -> signal name."""
    return dict(_paused)


def park_waits() -> None:
    """The process exits: paused waits stop at their next poll, leaving their runs Paused on the
    API (they end with Prefect's `Abort`, which changes no state); they are woken to see it now."""
    _exiting.set()
    for waker in list(_wakers.values()):
        waker.wake(stop=False)


class _PausedAtExit(logging.Filter):
    """Prefect's async engine logs any flow run that ends other than Completed at ERROR; a run left
    Paused as its process exits (`park_waits`) is expected and already explained by this
    module's WARNING, so its "Finished in state Paused()" is logged at INFO instead."""

    def __init__(self) -> None:
        super().__init__()
        self.run_ids: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno == logging.ERROR and getattr(record, "flow_run_id", None) in self.run_ids
                and record.getMessage().startswith("Finished in state Paused")):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_paused_at_exit = _PausedAtExit()


def _left_paused(run_id: str) -> None:
    """Run `run_id` stays Paused as this process exits: its end is logged at INFO (installed on
    Prefect's flow-run logger the first time, at exit; never at import)."""
    _paused_at_exit.run_ids.add(run_id)
    flow_runs = logging.getLogger("prefect.flow_runs")
    if _paused_at_exit not in flow_runs.filters:
        flow_runs.addFilter(_paused_at_exit)


class WaitCancelled(Abort):
    """A wait ends without a signal: the run was cancelled, or this process is exiting. The engine
    stops the run as for Prefect's own `Abort`, leaving its state (Cancelled, or Paused) as it is;
    an ordinary exception would be recorded as a failure."""

    def __init__(self, message: str, state: Any) -> None:
        super().__init__(message)
        self.state = state


def check_signal_name(name: Any) -> str:
    return check_name(name, "a signal name", spaces=False)


def signal_key(name: str, number: int) -> str:
    """The flow run input key of signal `number` (from 0) of `name` (keys allow only a-z0-9-)."""
    return f"{SIGNAL_KEY_PREFIX}{name.encode().hex()}-{number}"


def reset_waits(run_id: str) -> None:
    """A run's attempt starts (its waits are counted from 0 again: the function replays) or
    ends (nothing of it is kept)."""
    with _waits_lock:
        _waits.pop(run_id, None)


def _next_wait(run_id: str, name: str) -> int:
    with _waits_lock:
        counts = _waits.setdefault(run_id, {})
        number = counts.get(name, 0)
        counts[name] = number + 1
        return number


def new_sender() -> str:
    """A token naming one `signal` call: its retries find what an earlier try recorded."""
    return f"beluga:{uuid.uuid4().hex}"


async def send_signal(client: Any, run_id: Any, name: str, payload: Any, sender: str | None = None) -> int:
    """Record the signal `name` with `payload` for the run; return its sequence number.

    `sender` (from `new_sender()`) makes a retried send exactly-once: a try whose reply was lost
    had recorded the signal under that sender, and the retry finds it instead of adding it again.
    """
    check_signal_name(name)
    text = check_json({"name": name, "payload": payload}, f"signal {name!r}: the payload")
    sender = sender or new_sender()
    prefix = f"{SIGNAL_KEY_PREFIX}{name.encode().hex()}-"
    existing = await client.filter_flow_run_input(
        flow_run_id=run_id, key_prefix=prefix, limit=100_000, exclude_keys=set()
    )
    for recorded in existing:
        if recorded.sender == sender:
            return int(recorded.key.rsplit("-", 1)[1])
    number = len(existing)
    while True:
        try:
            await client.create_flow_run_input(
                flow_run_id=run_id, key=signal_key(name, number), value=text, sender=sender
            )
            return number
        except PrefectHTTPStatusError as exc:
            if getattr(exc.response, "status_code", None) != 409:
                raise
            if await _sender_of(client, run_id, signal_key(name, number)) == sender:
                return number  # our own earlier try landed; its reply was lost and it was resent
            number += 1  # another sender took this number first


async def _sender_of(client: Any, run_id: Any, key: str) -> str | None:
    found = await client.filter_flow_run_input(flow_run_id=run_id, key_prefix=key, limit=1_000, exclude_keys=set())
    return next((recorded.sender for recorded in found if recorded.key == key), None)


async def _read_signal(client: Any, run_id: str, key: str) -> tuple[bool, Any]:
    try:
        value = await client.read_flow_run_input(flow_run_id=run_id, key=key)
    except (ObjectNotFound, PrefectHTTPStatusError) as exc:
        if not not_found(exc):
            raise
        return False, None
    return True, json.loads(value)["payload"]


async def await_for_signal(name: str, *, timeout: float = 3600, poll_interval: float = 1.0) -> Any:
    """Return the payload of the next signal `name` sent to this run, pausing until one is sent.

    Args:
        name: The signal's name, as given to `Workflow.signal`.
        timeout: Seconds to wait; then `WorkflowTimeout` (the run fails unless it catches it).
        poll_interval: How often (seconds) the paused run checks for the signal.

    Raises:
        WaitCancelled: the run was cancelled or terminated while it waited (a Prefect `Abort`:
            the run ends, Cancelled).
    """
    check_signal_name(name)
    run_id = current_run_id("wait_for_signal")
    key = signal_key(name, _next_wait(run_id, name))
    async with get_client() as client:
        found, payload = await _read_signal(client, run_id, key)
        if found:
            return payload
        logger = get_run_logger()
        pause_key = f"{key}-{uuid.uuid4().hex[:8]}"  # Prefect refuses a pause key a run has used
        await client.set_flow_run_state(run_id, Paused(timeout_seconds=int(timeout), pause_key=pause_key))
        logger.info("Waiting for signal %r (Paused until workflow.signal(run_id, %r, payload))", name, name)
        deadline = time.monotonic() + timeout
        waker = _wakers[run_id] = _Waker()
        _paused[run_id] = name
        try:
            return await _poll(client, run_id, name, key, deadline, timeout, poll_interval, waker)
        finally:
            _paused.pop(run_id, None)
            if _wakers.get(run_id) is waker:
                del _wakers[run_id]


async def _poll(
    client: Any,
    run_id: str,
    name: str,
    key: str,
    deadline: float,
    timeout: float,
    poll_interval: float,
    waker: _Waker,
) -> Any:
    logger = get_run_logger()
    while True:
        found, payload = await _read_signal(client, run_id, key)
        state = (await client.read_flow_run(run_id)).state
        if waker.stopped or (state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED)):
            raise WaitCancelled(f"cancelled while waiting for signal {name!r}", state)
        if _exiting.is_set() and not found:
            _log.warning(
                "workflow run %s is paused waiting for signal %r and stays Paused on the Prefect API as "
                "this process exits: send the signal with workflow.signal(run_id, %r, payload) and finish "
                "it with workflow.retry(run_id), from any process",
                run_id,
                name,
                name,
            )
            _left_paused(run_id)
            raise WaitCancelled(f"this process exited while the run waited for signal {name!r}", state)
        if found:
            if state is not None and state.is_paused():
                await client.set_flow_run_state(run_id, Running())
            logger.info("Received signal %r", name)
            return payload
        if time.monotonic() >= deadline:
            raise WorkflowTimeout(f"no signal {name!r} arrived within {timeout}s", run_id=run_id)
        await waker.sleep(min(poll_interval, max(deadline - time.monotonic(), 0)))


def wait_for_signal(name: str, *, timeout: float = 3600, poll_interval: float = 1.0) -> Any:
    """Sync twin of `await_for_signal`, for sync workflow functions."""
    return run_sync(await_for_signal(name, timeout=timeout, poll_interval=poll_interval))
