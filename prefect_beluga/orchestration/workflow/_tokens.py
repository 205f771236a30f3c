"""A workflow run's token stream, across processes, as Prefect events.

A run started with `workflow.execute(input, stream=True)` carries the tag `STREAM_TAG`; inside
it (on whatever process or worker runs it) a `TokenSink` hands every chat model delta to an
`EventPublisher`, which publishes them as Prefect events on the resource
`prefect-beluga.workflow-run.<run_id>`:

- `prefect-beluga.tokens` — payload `{"seq", "node", "text"}`; a node's chunks are coalesced so
  it emits at most ~10 events a second (its first chunk goes at once);
- `prefect-beluga.retry` — payload `{"seq", "node", "step_attempt"}` (and `"substep"` for a
  retried sub-step), before a retried step's fresh stream;
- the events of a Map item also carry its `"index"`, and each item's chunks are coalesced
  apart, as a node's are;
- `prefect-beluga.tool-call` / `prefect-beluga.tool-result` — payload `{"seq", ...}` with the
  fields of an agent's `__tool_call__` / `__tool_result__` event; its node's text goes first;
- `prefect-beluga.tokens-end` — payload `{"seq"}`: the run's body is done; `seq` events precede it.

`read_events` (behind `workflow.astream(run_id)`) subscribes to the resource through Prefect's
event subscriber, reads back what was published before (`/events/filter`), orders and dedupes
by `seq`, and ends when the run is final and every event up to the end marker was yielded.
Through a server restart its subscriber reconnects and its reads wait the outage out, the
events read again deduped by `seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.events import emit_event

from prefect_beluga.core import events
from prefect_beluga.core.streaming import (
    TokenSink,
    source_fields,
)
from prefect_beluga.orchestration import _prefect_internals as internals
from prefect_beluga.orchestration.workflow._patience import FIRST_DELAY, MAX_DELAY

STREAM_TAG = "beluga:stream-tokens"
TOKENS_EVENT = "prefect-beluga.tokens"
RETRY_EVENT = "prefect-beluga.retry"
END_EVENT = "prefect-beluga.tokens-end"
#: Prefect event name of each agent tool event key, and back.
TOOL_EVENTS = {events.TOOL_CALL: "prefect-beluga.tool-call", events.TOOL_RESULT: "prefect-beluga.tool-result"}
_TOOL_KEYS = {name: key for key, name in TOOL_EVENTS.items()}
#: Seconds between two events of one node (at most ~10 a second).
MIN_INTERVAL = 0.1

#: Where text comes from: its node and its Map item's index (None: not a Map item).
Source = tuple[str, int | None]


def _source(detail: dict[str, Any]) -> Source:
    return detail["node"], detail.get("index")


def resource_id(run_id: str) -> str:
    return f"prefect-beluga.workflow-run.{run_id}"


class EventPublisher:
    """Publishes a run's token events as Prefect events; thread-safe, one flusher thread."""

    def __init__(self, run_id: str, attempt: int = 1, interval: float = MIN_INTERVAL) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.interval = interval
        self.seq = 0
        self._buffers: dict[Source, list[str]] = {}
        self._last_sent: dict[Source, float] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._flush_loop, name=f"beluga-tokens-{run_id}", daemon=True)
        self._thread.start()

    def deliver(self, event: dict[str, Any]) -> None:
        """A `TokenSink` event: a token is buffered, a retry flushes its node and goes at once."""
        with self._lock:
            if events.TOKEN in event:
                token = event[events.TOKEN]
                self._buffers.setdefault(_source(token), []).append(token["text"])
            elif events.RETRY in event:
                retry = event[events.RETRY]
                source = _source(retry)
                self._send(source)
                # `attempt` in a payload is the run's attempt (events are ordered by it)
                self._emit(RETRY_EVENT, {**source_fields(*source), "step_attempt": retry["attempt"],
                                         **({"substep": retry["substep"]} if "substep" in retry else {})})
            else:
                for key, name in TOOL_EVENTS.items():
                    if key in event:  # after the text its model wrote before asking
                        self._send(_source(event[key]))
                        self._emit(name, dict(event[key]))
            self._lock.notify()

    def close(self, returned: bool = False) -> None:
        """Flush every node, then publish the end marker (`returned`: the run's body returned,
        so no later attempt follows, whatever the run's `run_count` says after a pause)."""
        with self._lock:
            self._closed = True
            for source in list(self._buffers):
                self._send(source)
            self._emit(END_EVENT, {"returned": True} if returned else {})
            self._lock.notify()
        self._thread.join(timeout=5)

    def _flush_loop(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                wait = None
                for source, parts in self._buffers.items():
                    if not parts:
                        continue
                    due = self._last_sent.get(source, float("-inf")) + self.interval
                    if due <= now:
                        self._send(source)
                    else:
                        wait = due - now if wait is None else min(wait, due - now)
                self._lock.wait(timeout=wait)

    def _send(self, source: Source) -> None:
        parts = self._buffers.get(source)
        if parts:
            self._emit(TOKENS_EVENT, {**source_fields(*source), "text": "".join(parts)})
            parts.clear()
            self._last_sent[source] = time.monotonic()

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        emit_event(
            event=name,
            resource={"prefect.resource.id": resource_id(self.run_id)},
            related=[{"prefect.resource.id": f"prefect.flow-run.{self.run_id}", "prefect.resource.role": "flow-run"}],
            payload={"attempt": self.attempt, "seq": self.seq, **payload},
        )
        self.seq += 1


@contextlib.contextmanager
def publishing(run_id: str | None, tags: Any, attempt: int = 1) -> Any:
    """Inside a workflow's flow run tagged `STREAM_TAG`: publish its token events (numbered
    per attempt of the run: a retried run's events follow the earlier attempt's)."""
    if run_id is None or STREAM_TAG not in (tags or ()):
        yield
        return
    publisher = EventPublisher(run_id, attempt=max(attempt, 1))
    returned = False
    try:
        with TokenSink(publisher.deliver).active():
            yield
        returned = True
    finally:
        publisher.close(returned)


def _as_update(name: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    if name == TOKENS_EVENT:
        return {events.TOKEN: {**source_fields(*_source(payload)), "text": payload["text"]}}
    if name == RETRY_EVENT:
        detail = {**source_fields(*_source(payload)), "attempt": payload["step_attempt"]}
        if payload.get("substep") is not None:
            detail["substep"] = payload["substep"]
        return {events.RETRY: detail}
    if name in _TOOL_KEYS:
        return {_TOOL_KEYS[name]: {k: v for k, v in payload.items() if k not in ("seq", "attempt")}}
    return None


async def read_events(
    api: Any,
    run_id: str,
    since: datetime | None,
    is_final: Callable[[], Awaitable[tuple[bool, int]]],
    *,
    poll: float = 0.25,
    grace: float = 30.0,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the run's token events in order, without duplicates, until the run is final and
    all its events were yielded (or, without an end marker — a crashed run — `grace` seconds
    after it turned final: then what the API holds, in order).

    `api` is the call's `Patience`: reads back from ``/events/filter`` wait out an API outage.
    The live subscriber reconnects (with backoff) whenever its connection drops — a server
    restart, a clean close — and each new subscription replays the run's events, which are
    deduped by `(attempt, seq)` with the ones already read; while it is down, the events are
    read back every `poll` seconds instead."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventOccurredFilter, EventResourceFilter

    start = (since or datetime.now(timezone.utc)) - timedelta(minutes=1)
    event_filter = EventFilter(
        resource=EventResourceFilter(id=[resource_id(run_id)]),
        occurred=EventOccurredFilter(since=start, until=datetime.now(timezone.utc) + timedelta(days=365)),
    )
    live: asyncio.Queue[Any] = asyncio.Queue()
    subscribed = asyncio.Event()  # the first subscription was made (or failed): read back now
    connected = False

    async def listen() -> None:
        nonlocal connected
        delay = FIRST_DELAY
        while True:
            try:
                async with get_events_subscriber(filter=event_filter.model_copy(deep=True)) as subscriber:
                    connected = True
                    subscribed.set()
                    delay = FIRST_DELAY
                    async for event in subscriber:
                        live.put_nowait(event)
            except Exception:  # the server went away (or refused us): subscribe again, later
                pass
            finally:
                connected = False
                subscribed.set()
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, MAX_DELAY)

    listener = asyncio.create_task(listen())
    # Events are ordered by (attempt of the run, seq within it); an attempt ends with its marker.
    pending: dict[tuple[int, int], tuple[str, dict[str, Any]]] = {}
    cursor = (1, 0)
    ended: set[int] = set()  # attempts whose end marker was yielded
    returned = False  # an end marker said the body returned: the last attempt

    def take(name: str, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("seq"), int):
            return
        key = (int(payload.get("attempt", 1)), payload["seq"])
        if key >= cursor and key not in pending:
            pending[key] = (name, payload)

    async def backfill(client: Any) -> None:
        from prefect.events.filters import EventOrder

        ordered = event_filter.model_copy(update={"order": EventOrder.ASC})
        events, next_page = await internals.read_events(client, ordered, limit=50)
        while True:
            for event in events:
                take(event.event, event.payload)
            if not next_page:
                return
            events, next_page = await internals.read_events_page(client, next_page)

    def advance() -> Iterator[dict[str, Any]]:
        nonlocal cursor, returned
        while True:
            if cursor not in pending and cursor[0] in ended and (cursor[0] + 1, 0) in pending:
                cursor = (cursor[0] + 1, 0)  # the run was retried: its next attempt's events
            if cursor not in pending:
                return
            name, payload = pending.pop(cursor)
            if name == END_EVENT:
                ended.add(cursor[0])
                returned = returned or bool(payload.get("returned"))
            cursor = (cursor[0], cursor[1] + 1)
            update = _as_update(name, payload)
            if update is not None:
                yield update

    try:
        await asyncio.wait({listener, asyncio.ensure_future(subscribed.wait())}, return_when=asyncio.FIRST_COMPLETED)
        await api(backfill)
        last_backfill = time.monotonic()
        final_since: float | None = None
        attempts = 1
        while True:
            for update in advance():
                yield update
            if final_since is not None and (attempts in ended or returned):
                # The final attempt's end marker was reached: every event was yielded. (A run
                # paused and resumed in its process counts two attempts but publishes one.)
                return
            try:
                event = await asyncio.wait_for(live.get(), timeout=poll)
                take(event.event, event.payload)
                continue
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if final_since is None:
                final, attempts = await is_final()
                if final:
                    final_since = now
                    continue
            gap = bool(pending) or not connected or final_since is not None
            if gap and now - last_backfill >= poll:
                await api(backfill)  # events not delivered live (published before we subscribed,
                last_backfill = time.monotonic()  # or while the subscriber was reconnecting)
            if final_since is not None and now - final_since > grace:
                # No end marker (a crash), or an event the API never stored: what it holds, in order.
                for key in sorted(pending):
                    cursor = key
                    for update in advance():
                        yield update
                return
    finally:
        listener.cancel()
        with contextlib.suppress(BaseException):
            await listener
