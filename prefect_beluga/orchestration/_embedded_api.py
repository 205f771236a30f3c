"""Prefect's embedded (ephemeral) API, started on this package's first call with two defaults.

Without `PREFECT_API_URL`, Prefect starts a temporary API server in a subprocess the first time
a client is needed (`prefect.server.api.server.SubprocessASGIServer`), and gives it
`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS` (20 s by default) to answer. That start
costs 6-10 s of CPU on a small machine (the server imports its whole app and migrates its
SQLite database); on a busy 2-core machine it took 22-50 s, so the first call of a script
failed with Prefect's "Timed out while attempting to connect to ephemeral Prefect API server".

`ensure_api()` is called before this package first talks to the API (a chain's or graph's
run, a workflow call). When the embedded API is what this process will use and it has not
started yet, it starts it itself, the same way Prefect would, with:

- a start-up timeout of `DEFAULT_STARTUP_TIMEOUT` seconds, only when the user has set no
  `PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS` (environment, profile or `.env`);
- usage telemetry off for that temporary server (`PREFECT_SERVER_ANALYTICS_ENABLED=false`),
  only when the user has set none: offline it only logs `ERROR | prefect.server.services.
  telemetry - Failed to send telemetry`, and online it would report a throwaway server.

Nothing changes in this process's environment or settings: both values go only to the
server's subprocess and to its start. A start that still times out raises Prefect's error with
a note saying what to set. With `PREFECT_API_URL` set (a `prefect server start`, Prefect Cloud)
this does nothing, and nothing is started.

A run inside a user's own `@flow` finds the API already started by Prefect, with Prefect's
defaults: set the two variables there yourself (see docs/operations.md).
"""

from __future__ import annotations

import threading

from prefect.settings import (
    PREFECT_SERVER_ANALYTICS_ENABLED,
    get_current_settings,
    temporary_settings,
)

#: Seconds the embedded API may take to start when the user set no start-up timeout.
DEFAULT_STARTUP_TIMEOUT = 120
TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"

_lock = threading.Lock()
_started = False

TIMEOUT_NOTE = (
    "prefect-beluga: Prefect's embedded API (a temporary server in a subprocess, started on the "
    "first call of a process) did not answer within {timeout} s. On a busy machine its start can "
    f"take longer: set {TIMEOUT_SETTING} higher, or run `prefect server start` once and set "
    "PREFECT_API_URL=http://127.0.0.1:4200/api so that no process starts its own."
)


def uses_embedded_api() -> bool:
    """True when this process's Prefect client would start (or use) the embedded API."""
    settings = get_current_settings()
    return not settings.api.url and bool(settings.server.ephemeral.enabled)


def ensure_api() -> None:
    """Start the embedded API with this package's defaults, once, if this process will use it.

    Cheap after the first call. Blocks while the server starts, as Prefect's client does.
    """
    global _started
    if _started or not uses_embedded_api():
        return
    from prefect.server.api.server import SubprocessASGIServer

    with _lock:
        if _started:
            return
        server = SubprocessASGIServer()
        if not server.running:
            settings = get_current_settings()
            timeout = settings.server.ephemeral.startup_timeout_seconds
            if "startup_timeout_seconds" not in settings.server.ephemeral.model_fields_set:
                timeout = max(timeout, DEFAULT_STARTUP_TIMEOUT)
            updates = {}
            if "analytics_enabled" not in settings.server.model_fields_set:
                updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
            try:
                # The server's subprocess gets the current settings as its environment.
                with temporary_settings(updates=updates):
                    server.start(timeout=timeout)
            except RuntimeError as exc:
                if "Timed out" in str(exc):
                    exc.add_note(TIMEOUT_NOTE.format(timeout=timeout))
                raise
        _started = True
