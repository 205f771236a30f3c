"""One client's view of a run's events: the workflow's stream, mapped, resumed from a cursor.

`run_events` reads `workflow.astream(run_id)` from the run's start (the Prefect API replays what
was published, then live), maps every event (AG-UI, or the plain package shape), numbers them,
and yields those after the client's `Cursor`. Meanwhile it looks at the run's state: a run paused
waiting for a signal (an agent tool's `approve:<tool>`) is announced once per pause key.
Leaving (the client disconnects) only stops reading: the run goes on.

The clients of one run share one reader (`RunFeeds`): the app reads a run's stream from the
Prefect API once, however many clients watch it, and each client walks the same sequence from
its start (so positions are the same as a reader of its own would give). One reader per client
made 50 clients of one run 50 read-backs and 50 subscriptions against the API (measured in
docs/performance.md). The reader stops when the run's last client leaves.

The run's terminal event (`RUN_FINISHED` / `RUN_ERROR`, or the plain `__end__` / `__error__` /
`__cancelled__`) is never skipped by a cursor: a client whose `Last-Event-ID` is at or past the
ending's position (it saw the end already, or its cursor came from a stream whose positions
differ) still gets it, with the id `max(position, cursor)`, so a client that had it sees the
same id again and can tell, and no client is left reconnecting to a stream that never ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prefect_beluga.core.errors import WorkflowCancelled, WorkflowFailed
from prefect_beluga.core.events import CANCELLED, END, ERROR, WAITING
from prefect_beluga.orchestration import Workflow
from prefect_beluga.server._agui import AguiMapper, encode
from prefect_beluga.server._json import jsonable
from prefect_beluga.server._runs import RunDirectory
from prefect_beluga.server._sse import Cursor

#: Seconds between looks at the run's state (for waits), and the longest an approval waits for
#: its tool call to show in the stream before it is announced without it.
STATE_POLL = 0.5
CALL_GRACE = 2.0
#: Seconds a final run's stream may stay quiet before the run's outcome ends it here: a safety
#: net only, past `workflow.astream`'s own 30 s grace (a run with no end marker, e.g. crashed).
#: Shorter, it cut streams short: reading a finished run back can be quiet for seconds under load,
#: and the events after the cut were lost (their positions were then taken by the ending).
FINAL_QUIET = 45.0


class _Feed:
    """One run's stream as read once: every item so far, and a wake-up for its followers."""

    def __init__(self, workflow: Workflow, run_id: str) -> None:
        self.items: list[tuple[str, Any]] = []
        self.ended = False
        self.followers = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(workflow, run_id))

    async def _read(self, workflow: Workflow, run_id: str) -> None:
        try:
            async for update in workflow.astream(run_id):
                self._add(("update", update))
        except Exception as exc:  # noqa: BLE001 - the run's end, told to every follower
            self._add(("error", exc))
        else:
            self._add(("done", None))

    def _add(self, item: tuple[str, Any]) -> None:
        self.items.append(item)
        self.ended = item[0] != "update"
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self) -> AsyncIterator[tuple[str, Any]]:
        index = 0
        while True:
            while index < len(self.items):
                index += 1
                yield self.items[index - 1]
            if self.ended:
                return
            await self._changed.wait()

    async def stop(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


class RunFeeds:
    """The runs this app is streaming to clients now: one `_Feed` per run, shared."""

    def __init__(self) -> None:
        self._feeds: dict[tuple[str, str], _Feed] = {}

    @contextlib.asynccontextmanager
    async def follow(self, workflow: Workflow, run_id: str) -> AsyncIterator[AsyncIterator[tuple[str, Any]]]:
        """The run's stream items (`("update", event)`, then `("done", None)` or `("error", exc)`)
        from its start; the run's reader is stopped when its last follower leaves."""
        key = (workflow.workflow_id, run_id)
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(workflow, run_id)
        feed.followers += 1
        try:
            yield feed.follow()
        finally:
            feed.followers -= 1
            if feed.followers == 0 and self._feeds.get(key) is feed:
                del self._feeds[key]
                await feed.stop()


async def run_events(
    workflow: Workflow,
    run_id: str,
    directory: RunDirectory,
    *,
    after: Cursor | None = None,
    plain: bool = False,
    scrub: Callable[[str], str] = str,
    state_poll: float = STATE_POLL,
    keepalive: float | None = None,
    feeds: RunFeeds | None = None,
) -> AsyncIterator[tuple[str, str] | None]:
    """Yield `(event id, JSON data)` for the run's events after `after`, until its end; None
    after `keepalive` seconds without one (the route sends an SSE comment). With `feeds`, the
    run's stream is read once for all of that app's clients."""
    after = after or Cursor()
    mapper = AguiMapper(run_id, workflow.workflow_id)
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def pump() -> None:
        if feeds is not None:
            async with feeds.follow(workflow, run_id) as items:
                async for item in items:
                    await queue.put(item)
            return
        try:
            async for update in workflow.astream(run_id):
                await queue.put(("update", update))
        except Exception as exc:  # noqa: BLE001 - the run's end, told to the client
            await queue.put(("error", exc))
        else:
            await queue.put(("done", None))

    reader = asyncio.create_task(pump())
    n = -1
    announced = after.key
    waiting_since: float | None = None

    def out(data: str) -> tuple[str, str] | None:
        nonlocal n
        n += 1
        return (Cursor(n, announced).id(), data) if n > after.n else None

    def mapped(update: dict[str, Any]) -> list[str]:
        if plain:
            return [json.dumps(jsonable(update))]
        return [encode(e) for e in mapper.feed(update)]

    def ending(kind: str, item: Any) -> list[tuple[str, str]]:
        """The run's last events after the cursor; the terminal one whatever the cursor."""
        if kind == "error":
            datas = _ending(item, mapper, plain, scrub)
        elif plain:
            datas = [json.dumps({END: jsonable(item)})]
        else:
            datas = [encode(e) for e in mapper.finish(item)]
        events = [event for data in datas[:-1] if (event := out(data)) is not None]
        terminal = out(datas[-1])
        return [*events, terminal or (Cursor(max(n, after.n), announced).id(), datas[-1])]

    try:
        for data in ([] if plain else [encode(e) for e in mapper.start()]):
            if (event := out(data)) is not None:
                yield event
        last_look = last_sent = last_update = time.monotonic()
        final_since: float | None = None
        while True:
            try:
                kind, item = await asyncio.wait_for(queue.get(), timeout=state_poll)
            except asyncio.TimeoutError:
                kind, item = "idle", None
            now = time.monotonic()
            if kind == "update" and END in item:
                kind, item = "end", item[END]
            if kind in ("end", "error"):
                for event in ending(kind, item):
                    yield event
                return
            if kind == "update":
                last_update = now
                for data in mapped(item):
                    if (event := out(data)) is not None:
                        last_sent = now
                        yield event
            elif keepalive is not None and now - last_sent >= keepalive:
                last_sent = now
                yield None
            if now - last_look < state_poll:
                continue
            last_look = now
            try:
                state = await directory.watched_state(run_id)
            except Exception:  # noqa: BLE001 - a state read that fails is tried again next look
                continue
            if state.final:
                # The run is over and its events were read (the stream reads the API back every
                # 0.25 s once the run is final): if the stream itself has not ended after a quiet
                # spell, end it here with the run's outcome (see docs/server.md, "Known gaps").
                final_since = final_since or now
                if now - max(final_since, last_update) >= FINAL_QUIET:
                    reader.cancel()
                    try:
                        kind, item = "end", await workflow.aget_result(workflow.workflow_id, run_id, timeout=30)
                    except Exception as exc:  # noqa: BLE001 - failed / cancelled: told to the client
                        kind, item = "error", exc
                    for event in ending(kind, item):
                        yield event
                    return
                continue
            if state.signal is None or state.pause_key == announced:
                waiting_since = None
                continue
            waiting_since = waiting_since or now
            tool = state.signal.split(":", 1)[1] if state.signal.startswith("approve:") else None
            if tool is not None and mapper.pending_call(tool) is None and now - waiting_since < CALL_GRACE:
                continue  # its tool call event is still on its way: announce them in order
            announced = state.pause_key
            waiting = mapper.waiting(state.signal, state.pause_key)
            data = json.dumps({WAITING: jsonable(waiting.value)}) if plain else encode(waiting)
            # Not a stream position: the id keeps `n` and names the pause key it announced.
            last_sent = now
            yield Cursor(max(n, after.n), announced).id(), data
            waiting_since = None
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


def _ending(exc: BaseException, mapper: AguiMapper, plain: bool, scrub: Callable[[str], str]) -> list[str]:
    """The run ended other than Completed (or its stream could not be read)."""
    message = scrub(str(exc))
    if isinstance(exc, WorkflowCancelled):
        return [json.dumps({CANCELLED: message})] if plain else [encode(e) for e in mapper.cancelled(message)]
    if not isinstance(exc, WorkflowFailed):
        message = f"the run's events could not be read: {type(exc).__name__}: {message}"
    return [json.dumps({ERROR: message})] if plain else [encode(e) for e in mapper.failed(message)]
