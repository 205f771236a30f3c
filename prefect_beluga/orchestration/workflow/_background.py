"""The runner that executes this process's (not deployed) workflow runs, and what runs inside them.

Runs of this process run on one event loop in a daemon thread. Each run is watched: when its
state turns Cancelling or Cancelled (from any process), it is stopped and marked Cancelled.
`cancel` / `terminate` from this process stop it at once (`astop`): a run paused in a signal
wait has its wait woken (`signals.interrupt_wait`), which ends the run, not its next poll. At
interpreter exit (before Python shuts its thread pools down, so the runs can still use them) the
runner waits for the runs still running; a run paused in `wait_for_signal` is left Paused on the
Prefect API (its wait stops polling, so nothing logs during shutdown) and a warning says how to
finish it: `workflow.signal(...)` then `workflow.retry(run_id)`, from any process.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
import time
import uuid
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext, SettingsContext
from prefect.exceptions import Abort
from prefect.states import Cancelled

from prefect_beluga.orchestration import _durable
from prefect_beluga.orchestration._progress import forget_published
from prefect_beluga.orchestration.signals import interrupt_wait, park_waits, paused_runs, reset_waits, wait_loop
from prefect_beluga.orchestration.workflow._tokens import publishing

_log = logging.getLogger("prefect_beluga.workflow")
# Seconds between looks at a run's state while watching it for a cancel.
_WATCH = 1.0
# Longest wait of `stop` / `astop` for a stopped run to end.
_STOP_WAIT = 10.0


class durable:
    """Within a workflow's flow run: the root durable scope of this attempt (`_durable.py`:
    steps, Map items, model turns and tool calls persist their results under the run's id and
    their place in it), and the run's signal waits are counted from the start (see
    `signals.await_for_signal`)."""

    def __enter__(self) -> None:
        context = FlowRunContext.get()
        run_id = self._run_id = str(context.flow_run.id) if context and context.flow_run else None
        if run_id is not None:
            reset_waits(run_id)
        self._token = _durable.current.set(_durable.workflow_scope(run_id) if run_id else None)
        # Started with execute(..., stream=True): publish the run's token events (see _tokens).
        flow_run = context.flow_run if context else None
        self._publishing = publishing(
            run_id, flow_run.tags if flow_run else (), flow_run.run_count if flow_run else 1
        )
        self._publishing.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._publishing.__exit__(*exc_info)
        finally:
            _durable.current.reset(self._token)
            if self._run_id is not None:  # this process keeps nothing of a finished attempt
                reset_waits(self._run_id)
                forget_published(self._run_id)


class BackgroundRunner:
    """Runs workflow flow runs of this process on one event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runs: dict[uuid.UUID, asyncio.Task[Any]] = {}
        # Submitted but not yet started on the loop: `drain` must wait for these too.
        self.starting: set[uuid.UUID] = set()
        self._workers_started = False  # Prefect's API log and events workers (see `_exit_first`)
        self.thread = threading.Thread(target=self.loop.run_forever, name="beluga-workflows", daemon=True)
        self.thread.start()
        atexit.register(self._at_exit)  # a fallback: `submit` registers it earlier in the exit

    def _exit_first(self) -> None:
        """Make `_at_exit` the first of threading's exit hooks: they run before concurrent.futures
        refuses new work (a plain atexit hook runs after: runs then fail "cannot schedule new
        futures") and before Prefect's API log and events workers stop (runs' last logs then fail with
        "--- Logging error ---"). Hooks run newest first, so start those workers, then register.

        Starting the workers takes ~0.1-0.5 s the first time (the events worker connects to the
        API): that is done on the runner's thread, before the first run (see `submit`), so
        `execute` returns without waiting for it; `submit` registers the hook at once too, so an
        exit right after `execute` still waits for the run."""
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        with contextlib.suppress(Exception):
            APILogWorker.instance()
            EventsWorker.instance()
        self._workers_started = True
        self._register_exit_hook()

    def _register_exit_hook(self) -> None:
        """Make `_at_exit` the newest of threading's exit hooks (the first to run)."""
        hooks = getattr(threading, "_threading_atexits", None)
        register = getattr(threading, "_register_atexit", None)
        if hooks is None or register is None:
            return
        with contextlib.suppress(ValueError):
            hooks.remove(self._at_exit)
        with contextlib.suppress(RuntimeError):  # already exiting
            register(self._at_exit)

    def submit(self, flow: Flow, flow_run: FlowRun, parameters: dict[str, Any]) -> None:
        """Run `flow_run` of `flow` on `parameters` on this runner's loop."""
        self._register_exit_hook()
        settings = SettingsContext.get()
        profile, values = (settings.profile, settings.settings) if settings else (None, None)

        async def run() -> None:
            if values is not None:
                with SettingsContext(profile=profile, settings=values):
                    await start_and_run()
            else:
                await start_and_run()

        async def start_and_run() -> None:
            if not self._workers_started:  # under the caller's settings: the workers of its API
                await asyncio.to_thread(self._exit_first)
            await self._run(flow, flow_run, parameters)

        def start() -> None:
            task = self.loop.create_task(run())
            self.runs[flow_run.id] = task
            self.starting.discard(flow_run.id)
            task.add_done_callback(lambda _: self.runs.pop(flow_run.id, None))

        self.starting.add(flow_run.id)

        # A fresh context: the caller's flow run (if any) is not this run's parent.
        contextvars.Context().run(self.loop.call_soon_threadsafe, start)

    async def _run(self, flow: Flow, flow_run: FlowRun, parameters: dict[str, Any]) -> None:
        from prefect.flow_engine import run_flow, run_flow_async

        watcher = asyncio.create_task(self._watch(flow_run.id))
        try:
            if flow.isasync:
                await run_flow_async(flow, flow_run=flow_run, parameters=parameters, return_type="state")
            else:  # a sync @flow: on a thread, so this loop keeps serving other runs
                await self._on_thread(
                    run_flow, flow, flow_run=flow_run, parameters=parameters, return_type="state"
                )
        except Abort:
            pass  # cancelled while paused in a signal wait: its state is already Cancelled
        except asyncio.CancelledError:
            # Stopped on purpose (cancel/terminate): Prefect's engine calls that a crash.
            async with get_client() as client:
                current = await client.read_flow_run(flow_run.id)
                if current.state is None or current.state.type != StateType.CANCELLED:
                    message = current.state.message if current.state and current.state.is_cancelling() else None
                    await client.set_flow_run_state(flow_run.id, Cancelled(message=message or "cancelled"), force=True)
        finally:
            watcher.cancel()

    async def _on_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` on a daemon thread of its own (not the loop's executor, whose
        threads the interpreter joins at exit: a run left paused would then hold the exit)."""
        future: asyncio.Future[Any] = self.loop.create_future()
        context = contextvars.copy_context()

        def settle(outcome: Any, failed: bool) -> None:
            if not future.done():
                (future.set_exception if failed else future.set_result)(outcome)

        def target() -> None:
            try:
                outcome, failed = context.run(fn, *args, **kwargs), False
            except BaseException as exc:
                outcome, failed = exc, True
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(settle, outcome, failed)

        threading.Thread(target=target, name="beluga-workflow-run", daemon=True).start()
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread goes on until its flow sees the cancel (a signal wait polls for it): the
            # run stays listed until then, so an exiting process waits for it to end cleanly.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(future, 30)
            raise

    async def _watch(self, run_id: uuid.UUID) -> None:
        async with get_client() as client:
            while True:
                await asyncio.sleep(_WATCH)
                try:
                    flow_run = await client.read_flow_run(run_id)
                except Exception:
                    continue
                if flow_run.state is not None and flow_run.state.type in (StateType.CANCELLING, StateType.CANCELLED):
                    task = self.runs.get(run_id)
                    if task is not None and not _interrupt_wait(run_id, stop=False):
                        task.cancel()  # (a signal wait, woken, sees the cancel and ends the run itself)
                    return

    def _stop_soon(self, run_id: uuid.UUID) -> concurrent.futures.Future[None]:
        """Stop the run `run_id` if this process runs it: a run paused in a signal wait has its
        wait woken to end the run now (`signals.interrupt_wait`), any other is cancelled. The
        future is done once the run has ended (at once if this process does not run it)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def settle(_: Any = None) -> None:
            if not done.done():
                done.set_result(None)

        def cancel() -> None:
            task = self.runs.get(run_id)
            if task is None:
                settle()
                return
            task.add_done_callback(settle)
            if not _interrupt_wait(run_id, stop=True):
                task.cancel()

        self.loop.call_soon_threadsafe(cancel)
        return done

    def stop(self, run_id: uuid.UUID) -> None:
        """Stop the run `run_id` if this process runs it (see `astop`); wait briefly for it to end.

        A run paused in a signal wait that polls on the loop of this very thread (a sync
        workflow's wait runs on Prefect's sync loop, where `Workflow.cancel` runs too) is not
        waited for: its wait, woken, ends the run as soon as this thread's loop is free. Async
        callers use `astop`, which always waits without blocking their loop."""
        done = self._stop_soon(run_id)
        if threading.current_thread() is self.thread:
            return
        if _current_loop() is not None and _wait_loop(run_id) is _current_loop():
            return
        with contextlib.suppress(concurrent.futures.TimeoutError):
            done.result(_STOP_WAIT)

    async def astop(self, run_id: uuid.UUID) -> None:
        """Stop the run `run_id` if this process runs it and wait (at most ~10 s) until it ended:
        a run paused in a signal wait ends at once, without waiting for the wait's next poll."""
        done = self._stop_soon(run_id)
        if threading.current_thread() is self.thread:
            return  # the run's own loop: waiting here would hold it
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(done)), _STOP_WAIT)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every run of this process has finished or is paused waiting for a signal
        (at most `timeout` seconds; None: no limit). True if none is left running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            submitted = [*self.starting, *self.runs]
            running = [run_id for run_id in submitted if str(run_id) not in paused_runs()]
            if not running:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _at_exit(self) -> None:
        if getattr(self, "_exited", False):  # once (threading's hook, then the atexit fallback)
            return
        self._exited = True
        if not self.drain(0):
            _log.info("waiting for %d workflow run(s) of this process to finish", len(self.runs))
            self.drain()
        park_waits()  # paused waits end at their next poll; their runs stay Paused
        deadline = time.monotonic() + 30
        while self.runs and time.monotonic() < deadline:
            time.sleep(0.05)


def _interrupt_wait(run_id: uuid.UUID, *, stop: bool) -> bool:
    """Wake the signal wait run `run_id` is paused in, if any (see `signals.interrupt_wait`)."""
    return interrupt_wait(str(run_id), stop=stop)


def _wait_loop(run_id: uuid.UUID) -> asyncio.AbstractEventLoop | None:
    """The event loop the signal wait of run `run_id` polls on, if it is paused in one here."""
    return wait_loop(str(run_id))


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_runner_lock = threading.Lock()
_the_runner: BackgroundRunner | None = None


def runner() -> BackgroundRunner:
    """This process's background runner (started on first use)."""
    global _the_runner
    with _runner_lock:
        if _the_runner is None:
            _the_runner = BackgroundRunner()
        return _the_runner
