"""The one place this package touches private Prefect (and httpx) attributes.

The runtime (`_runtime.py`) shares long-lived API clients between flow runs and wraps their
HTTP transport with a fast retry of SQLite's transient 503s. Doing so reads or sets three
things Prefect does not publish:

- `AsyncClientContext.__var__` / `SyncClientContext.__var__`: the context variables Prefect's
  engine reads its clients from (setting them is how the engine is handed a shared client);
- `PrefectClient._closed`: whether a cached client was closed behind our back;
- `PrefectClient._client._transport`: the httpx transport under Prefect's client;
- `QueueService._instances` / `._queue`: the items Prefect's events and API log workers still
  hold, which the runtime lets them send at exit before Prefect stops them (else Prefect warns
  "Still processing items: N items remaining..." on every script that ends right after a run);
- `LocalFileSystem._resolve_path` / `RemoteFileSystem._resolve_path`: a path under a filesystem
  block's base path, the way the block itself resolves it (`memory_blocks.py`).

And the REST routes the package calls itself: `POST /events/filter` and its next-page URLs only
where the client lacks `read_events` / `read_events_page` (`read_events` below), and
`POST /flow_runs/` (`create_flow_run_once`: the client's method takes no idempotency key).

Each is feature-detected here, by name, the first time it is needed. When one is missing (a
Prefect release renamed it) the runtime falls back to Prefect's own behaviour for that part —
Prefect's engine builds its own clients, or the client keeps its plain transport (Prefect's
own 2 s retry of a 503 applies) — and one warning names the Prefect version. Nothing else in
the package reads a private Prefect attribute.
"""

from __future__ import annotations

import threading
import warnings
from contextvars import ContextVar
from typing import Any

import httpx
import prefect
from prefect.context import AsyncClientContext, SyncClientContext

from prefect_beluga.core.errors import PrefectInternalsWarning

# Attribute names, in one place (a test renames them to simulate a Prefect without them).
CONTEXT_VAR_ATTR = "__var__"
CLOSED_ATTR = "_closed"
HTTPX_CLIENT_ATTR = "_client"
TRANSPORT_ATTR = "_transport"

_warned: set[str] = set()
_warn_lock = threading.Lock()


def _warn_once(what: str, fallback: str) -> None:
    with _warn_lock:
        if what in _warned:
            return
        _warned.add(what)
    warnings.warn(
        f"prefect-beluga: Prefect {prefect.__version__} has no {what}; {fallback}. "
        "Everything still runs; please report this Prefect version to prefect-beluga.",
        PrefectInternalsWarning,
        stacklevel=3,
    )


def reset_warnings() -> None:
    """Forget which warnings were given (for tests)."""
    with _warn_lock:
        _warned.clear()


def client_context_vars() -> tuple[ContextVar[Any], ContextVar[Any]] | None:
    """Prefect's async and sync client context variables, or None (then: Prefect's own clients)."""
    async_var = getattr(AsyncClientContext, CONTEXT_VAR_ATTR, None)
    sync_var = getattr(SyncClientContext, CONTEXT_VAR_ATTR, None)
    if isinstance(async_var, ContextVar) and isinstance(sync_var, ContextVar):
        return async_var, sync_var
    _warn_once(
        f"AsyncClientContext.{CONTEXT_VAR_ATTR} / SyncClientContext.{CONTEXT_VAR_ATTR}",
        "each flow run builds its own API clients, as Prefect does (slower runs)",
    )
    return None


def client_closed(client: Any) -> bool | None:
    """Whether a Prefect API client was closed; None when Prefect no longer says (then the
    runtime stops sharing clients and lets Prefect build its own)."""
    closed = getattr(client, CLOSED_ATTR, None)
    if isinstance(closed, bool):
        return closed
    _warn_once(
        f"PrefectClient.{CLOSED_ATTR}",
        "each flow run builds its own API clients, as Prefect does (slower runs)",
    )
    return None


def wrap_transport(client: Any, wrap: Any) -> bool:
    """Replace the httpx transport under a Prefect client with `wrap(transport)`.

    Returns False, leaving the client as it is, when the attributes are not there.
    """
    http = getattr(client, HTTPX_CLIENT_ATTR, None)
    transport = getattr(http, TRANSPORT_ATTR, None) if http is not None else None
    if isinstance(transport, httpx.AsyncBaseTransport):
        setattr(http, TRANSPORT_ATTR, wrap(transport))
        return True
    _warn_once(
        f"PrefectClient.{HTTPX_CLIENT_ATTR}.{TRANSPORT_ATTR} (httpx transport)",
        "a 503 from a busy SQLite API is retried by Prefect's client (after ~2 s)",
    )
    return False


# Prefect's background services (`prefect._internal.concurrency.services.QueueService`): the
# instances of a service class, and each one's queue of items not yet handled.
INSTANCES_ATTR = "_instances"
QUEUE_ATTR = "_queue"
RESOLVE_PATH_ATTR = "_resolve_path"


def pending_service_items(*service_classes: Any) -> int | None:
    """Items Prefect's services of `service_classes` (the events and API log workers) hold and
    have not taken off their queues yet, over all their instances; None when Prefect no longer
    says (then nothing waits for them at exit, as in Prefect: it warns "Still processing items").

    The queue's size, not its unfinished count: a batched service (the API log worker) never
    marks its items done, so that count only grows; and the size is what Prefect's warning
    counts. The instances of every service class sit in one dict of their common base."""
    fallback = "at exit Prefect may warn that it is still sending events"
    instances: dict[int, Any] = {}
    for cls in service_classes:
        found = getattr(cls, INSTANCES_ATTR, None)
        if not isinstance(found, dict):
            _warn_once(f"{cls.__name__}.{INSTANCES_ATTR}", fallback)
            return None
        instances.update({id(instance): instance for instance in list(found.values()) if isinstance(instance, cls)})
    total = 0
    for instance in instances.values():
        size = getattr(getattr(instance, QUEUE_ATTR, None), "qsize", None)
        if not callable(size):
            _warn_once(f"{type(instance).__name__}.{QUEUE_ATTR}", fallback)
            return None
        total += size()
    return total


def resolve_block_path(block: Any, folder: str) -> Any:
    """`folder` under a `LocalFileSystem` (a `Path`) or `RemoteFileSystem` (a URL str) block's base
    path, as the block resolves it; without Prefect's private resolver, joined the same way."""
    resolve = getattr(block, RESOLVE_PATH_ATTR, None)
    if callable(resolve):
        return resolve(folder)
    _warn_once(f"{type(block).__name__}.{RESOLVE_PATH_ATTR}", "the folder is joined to the block's basepath directly")
    from prefect.filesystems import LocalFileSystem

    if isinstance(block, LocalFileSystem):
        from pathlib import Path

        base = Path(block.basepath).expanduser().resolve() if block.basepath else Path(".").resolve()
        return (base / folder).resolve()
    return f"{block.basepath.rstrip('/')}/{folder.lstrip('/')}"



async def read_events(client: Any, event_filter: Any, limit: int) -> tuple[list[Any], str | None]:
    """One page of events matching `event_filter`, and the next page's URL (or None).

    Prefect's public `read_events` / `read_events_page` when the client has them; otherwise its
    REST route `POST /events/filter` (and the page URL it returns), with one warning.
    """
    from prefect.events.schemas.events import ReceivedEvent

    if callable(getattr(client, "read_events", None)):
        page = await client.read_events(filter=event_filter, limit=limit)
        return list(page.events), (str(page.next_page) if page.next_page else None)
    _warn_once("PrefectClient.read_events", "events are read from POST /events/filter directly")
    body = {"filter": event_filter.model_dump(mode="json"), "limit": limit}
    reply = (await client.request("POST", "/events/filter", json=body)).json()
    return [ReceivedEvent.model_validate(e) for e in reply.get("events", ())], reply.get("next_page")


async def read_events_page(client: Any, next_page: str) -> tuple[list[Any], str | None]:
    """The page of events at `next_page` (a URL `read_events` returned), and the one after it."""
    from prefect.events.schemas.events import ReceivedEvent

    if callable(getattr(client, "read_events_page", None)):
        page = await client.read_events_page(next_page)
        return list(page.events), (str(page.next_page) if page.next_page else None)
    _warn_once("PrefectClient.read_events_page", "the next page is read from its URL directly")
    reply = await getattr(client, HTTPX_CLIENT_ATTR).get(next_page)
    reply.raise_for_status()
    body = reply.json()
    return [ReceivedEvent.model_validate(e) for e in body.get("events", ())], body.get("next_page")


async def create_flow_run_once(client: Any, create: Any) -> Any:
    """Create the flow run `create` (a `FlowRunCreate` with an `idempotency_key`): a second call
    with the same key returns the first run, never a second one.

    Prefect's `PrefectClient.create_flow_run` takes no idempotency key (3.9), so this posts
    `create` to Prefect's REST route `POST /flow_runs/`, which honours it. There is no public
    client method to fall back to that keeps exactly-once creation.
    """
    from prefect.client.schemas.objects import FlowRun

    reply = await client.request("POST", "/flow_runs/", json=create.model_dump(mode="json", exclude_unset=True))
    return FlowRun.model_validate(reply.json())
