"""Long-lived Prefect API clients shared by flow runs, and their busy-retry transport.

Each top-level flow run would otherwise build two new Prefect API clients (the run's async
client, and a sync one that reads the server's default result storage), each loading the CA
bundle into a new SSL context: ~40-60 ms of CPU per run on a small machine, even against a
plain-http local API. `api_clients` hands Prefect one long-lived pair instead (for
`_runtime.run_body`).

Against the embedded SQLite API, creating a flow run while the server is writing task-run
events fails with a 503 (SQLITE_BUSY_SNAPSHOT: the request's transaction read, then lost the
write to another writer; it was rolled back) and Prefect's client retries 2 s later
(PrefectHQ/prefect#18934). The shared async client first retries such a 503 itself, within
tens of milliseconds (see `BusyRetryTransport`), before Prefect's own back-off applies.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prefect.context import AsyncClientContext, SyncClientContext
from prefect.settings import get_current_settings
from prefect.utilities.asyncutils import add_event_loop_shutdown_callback

from prefect_beluga.orchestration import _prefect_internals as internals
from prefect_beluga.orchestration._embedded_api import ensure_api

# Per event loop, per API: an open async client context (a client is bound to its loop).
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, ...], AsyncClientContext]
] = weakref.WeakKeyDictionary()
# Per API: an open sync client context (httpx's sync client is thread-safe).
_sync_clients: dict[tuple[str, ...], SyncClientContext] = {}
_lock = threading.Lock()


def _api_key() -> tuple[str, ...]:
    """What a client is bound to: the API's address and credentials in the current settings.

    A change of URL, API key or auth string (`PREFECT_API_AUTH_STRING`) gets a new client
    built from the new settings. The credentials are kept as digests, not in plain text.
    """
    api = get_current_settings().api
    secret = api.key.get_secret_value() if api.key else ""
    auth = api.auth_string.get_secret_value() if api.auth_string else ""
    return (str(api.url or ""), _digest(secret), _digest(auth))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest() if secret else ""


def _version_check_enabled() -> bool:
    return get_current_settings().client.server_version_check_enabled


class BusyRetryTransport(httpx.AsyncBaseTransport):
    """Retries a 503 without `Retry-After` a few times within tens of milliseconds.

    The Prefect server answers 503 (no `Retry-After`) only for database errors its client may
    retry: the transaction was rolled back. On SQLite that is mostly a write that lost a race
    with the server's own event writer, which is over in milliseconds; Prefect's client would
    wait 2 s (then 4 s, ...). After `delays` the 503 goes up to it unchanged. A 503 with
    `Retry-After` (maintenance, rate limits) is passed up at once.
    """

    delays = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5)  # seconds, each with +-50 % jitter

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.retried = 0  # 503s absorbed here (for benchmarks and tests)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for delay in self.delays:
            response = await self.inner.handle_async_request(request)
            if response.status_code != 503 or "retry-after" in response.headers:
                return response
            await response.aclose()
            self.retried += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        return await self.inner.handle_async_request(request)

    async def __aenter__(self) -> BusyRetryTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.inner.__aexit__(*exc_info)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _shared_async_context(key: tuple[str, ...]) -> AsyncClientContext | None:
    """This loop's shared async client context for the API `key`, or None when Prefect's
    internals it relies on are missing (see `_prefect_internals`)."""
    loop = asyncio.get_running_loop()
    by_api = _async_clients.setdefault(loop, {})
    context = by_api.get(key)
    if context is not None:
        closed = internals.client_closed(context.client)
        if closed is None:
            return None
        if not closed:
            return context
    context = AsyncClientContext()  # builds the client: the one SSL context this loop pays for
    internals.wrap_transport(context.client, BusyRetryTransport)
    await context.client.__aenter__()
    if internals.client_closed(context.client) is None:
        await context.client.__aexit__(None, None, None)
        return None
    by_api[key] = context

    async def close() -> None:
        if by_api.get(key) is context:
            del by_api[key]
        await context.client.__aexit__(None, None, None)

    await add_event_loop_shutdown_callback(close)  # asyncio.run closes it with the loop
    if _version_check_enabled():
        await context.client.raise_for_api_version_mismatch_once()
    return context


def _shared_sync_context(key: tuple[str, ...]) -> SyncClientContext:
    with _lock:
        context = _sync_clients.get(key)
        if context is None:
            context = SyncClientContext()
            context.client.__enter__()
            _sync_clients[key] = context
    return context


def shared_transport() -> BusyRetryTransport | None:
    """The busy-retry transport of this loop's shared client for the current API, if any."""
    loop = asyncio.get_running_loop()
    context = _async_clients.get(loop, {}).get(_api_key())
    if context is None:
        return None
    http = getattr(context.client, internals.HTTPX_CLIENT_ATTR, None)
    transport = getattr(http, internals.TRANSPORT_ATTR, None)
    return transport if isinstance(transport, BusyRetryTransport) else None


@asynccontextmanager
async def api_clients() -> AsyncIterator[None]:
    """Make Prefect's engine use one shared async and one sync API client instead of new ones.

    Prefect's engine looks for clients in `AsyncClientContext` / `SyncClientContext` and builds
    new ones (and closes them) when there are none. Here they come from a cache: one async
    client per event loop and API (closed when `asyncio.run` shuts the loop down), one sync
    client per API and process.

    Inside a user's flow run the caller's async client is replaced too, for the duration of
    the call: the subflow's run is created through the shared client, whose transport absorbs
    the embedded SQLite API's transient 503 within milliseconds, where the caller's plain
    client would wait Prefect's 2 s retry (PrefectHQ/prefect#18934). A caller's sync client is
    left alone.
    """
    ensure_api()  # the embedded API, if that is the one: started with a patient timeout
    context_vars = internals.client_context_vars()
    if context_vars is None:
        yield
        return
    async_var, sync_var = context_vars
    key = _api_key()
    tokens: list[tuple[Any, Any]] = []
    current = AsyncClientContext.get()
    by_api = _async_clients.get(asyncio.get_running_loop(), {})
    if current is None or by_api.get(key) is not current:
        shared = await _shared_async_context(key)
        if shared is not None:
            tokens.append((async_var, async_var.set(shared)))
    if SyncClientContext.get() is None:
        shared_sync = _shared_sync_context(key)
        tokens.append((sync_var, sync_var.set(shared_sync)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
