"""Riding out Prefect API outages: a workflow call retries what an outage makes fail.

`Patience` wraps the Prefect client of one `Workflow` call (`execute`, `get_result`, `status`,
...). Each request it makes goes through `patience(op)`; when the request fails the way a server
restart or a database outage makes it fail — a connection refused, reset or timed out
(httpx transport errors, `OSError`), or an HTTP 5xx from the API — it is tried again with
exponential backoff and jitter (0.25 s doubling to at most `MAX_DELAY`) on a fresh client, until
the call's deadline (e.g. `get_result(timeout=...)`) or, for calls without one, until the outage
has lasted `patience` seconds (`DEFAULT_PATIENCE`, or ``$PREFECT_BELUGA_API_PATIENCE``). 4xx
replies (404: no such run, 409, 422, ...) are never retried.

Prefect's own client already retries 429/502/503 (and, on a client that has connected once,
connection errors) a few times inside one request; this handles what it gives up on. A fresh
client per retry makes a refused connection fail at once (Prefect retries those only on a client
that has connected), so our backoff, capped at a few seconds, decides when the API is tried again.

One WARNING per outage per API (not per attempt, not per caller) says the API is unreachable and
for how long calls wait; one INFO says when it answers again. Neither holds credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from prefect.client.orchestration import get_client

from prefect_beluga.orchestration._embedded_api import ensure_api

T = TypeVar("T")

#: Seconds a call without a timeout of its own waits out one outage of the Prefect API.
DEFAULT_PATIENCE = 120.0
#: Environment variable overriding `DEFAULT_PATIENCE` (seconds, > 0).
PATIENCE_ENV = "PREFECT_BELUGA_API_PATIENCE"
#: Backoff: the first retry after ~FIRST_DELAY s, doubling up to MAX_DELAY s (each with jitter).
FIRST_DELAY = 0.25
MAX_DELAY = 4.0
#: Seconds any one try may take however close the deadline: a slow but live API still answers.
MIN_TRY = 10.0

_log = logging.getLogger("prefect_beluga.workflow")
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError,
              ConnectionError, TimeoutError, socket.gaierror)


def default_patience() -> float:
    """`DEFAULT_PATIENCE`, or the seconds in ``$PREFECT_BELUGA_API_PATIENCE``."""
    text = os.environ.get(PATIENCE_ENV)
    if not text:
        return DEFAULT_PATIENCE
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"${PATIENCE_ENV} must be seconds > 0, got {text!r}")
    return seconds


def is_transient(exc: BaseException) -> bool:
    """True for what an API outage raises: connection errors and timeouts, and HTTP 5xx."""
    if isinstance(exc, httpx.HTTPStatusError):  # PrefectHTTPStatusError too
        return exc.response.status_code >= 500
    return isinstance(exc, _TRANSIENT)


class _Outages:
    """Which APIs this process currently finds unreachable, so each outage logs once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}

    def down(self, api: str, what: str, exc: BaseException, budget: str) -> None:
        with self._lock:
            if api in self._since:
                return
            self._since[api] = time.monotonic()
        _log.warning(
            "the Prefect API at %s is unreachable (%s during %s); retrying with backoff %s",
            api, _describe(exc), what, budget,
        )

    def __bool__(self) -> bool:
        return bool(self._since)

    def up(self, api: str) -> None:
        with self._lock:
            since = self._since.pop(api, None)
        if since is not None:
            _log.info("the Prefect API at %s answers again after %.1fs", api, time.monotonic() - since)


_outages = _Outages()


def _describe(exc: BaseException) -> str:
    """The error's type and status, never its text (a reply body or URL could hold secrets)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


class Patience:
    """The Prefect client of one workflow call, retrying requests through API outages.

    Args:
        what: The call, for the log (e.g. ``"get_result of workflow 'rag'"``).
        deadline: `time.monotonic()` by which the call must end (its own timeout); retries stop
            there. None: the call has no timeout, and one outage is waited out for `patience`.
        patience: Seconds one outage is waited out when there is no deadline (default
            `default_patience()`).

    Examples:
        ```python
        from prefect import flow
        from prefect_beluga.orchestration.workflow._patience import Patience

        @flow
        async def rag():
            return "done"

        run_id = (await rag(return_state=True)).state_details.flow_run_id
        async with Patience("status of flow 'rag'") as api:
            flow_run = await api(lambda client: client.read_flow_run(run_id))
        flow_run.state.type.value  # -> 'COMPLETED'
        ```
    """

    def __init__(self, what: str, *, deadline: float | None = None, patience: float | None = None) -> None:
        self.what = what
        self.deadline = deadline
        self.patience = default_patience() if patience is None else patience
        self._client: Any = None

    async def __aenter__(self) -> Patience:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._drop_client()

    async def client(self) -> Any:
        """The current Prefect client (opened on first use, replaced after a failure)."""
        if self._client is None:
            ensure_api()
            client = get_client()
            await client.__aenter__()
            self._client = client
        return self._client

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except Exception:  # a client broken by the outage: nothing to keep
                pass

    async def __call__(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """`await op(client)`, tried again through an outage; its result, or its error once the
        call's deadline (or patience) is spent. Errors that are not an outage's pass at once."""
        outage: float | None = None
        delay = FIRST_DELAY
        while True:
            limit = self._limit(outage)
            try:
                async with asyncio.timeout(max(limit - time.monotonic(), MIN_TRY)):
                    result = await op(await self.client())
            except Exception as exc:
                if not is_transient(exc):
                    raise
                api = self._api()
                now = time.monotonic()
                if outage is None:
                    outage = now
                    limit = self._limit(outage)
                    _outages.down(api, self.what, exc, self._budget())
                if now >= limit:
                    exc.add_note(f"prefect-beluga: {self.what} gave up: the Prefect API at {api} "
                                 f"did not answer within {self._budget()}")
                    raise
                await self._drop_client()  # a fresh client: a refused connection fails at once
                await asyncio.sleep(min(delay * random.uniform(0.5, 1.5), max(limit - now, 0.0)))
                delay = min(delay * 2, MAX_DELAY)
                continue
            if outage is not None or _outages:  # any call that gets through ends the outage
                _outages.up(self._api())
            return result

    def _limit(self, outage: float | None) -> float:
        if self.deadline is not None:
            return self.deadline
        return (time.monotonic() if outage is None else outage) + self.patience

    def _budget(self) -> str:
        if self.deadline is not None:
            return "until the call's timeout"
        return f"for up to {self.patience:g}s ({PATIENCE_ENV})"

    def _api(self) -> str:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        if not url:
            return "(ephemeral)"
        parts = urlsplit(str(url))  # never a user:password@ the URL may hold
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
