"""`Patience`, the retry behind every `Workflow` call: against a loopback HTTP server that answers
scripted statuses, and a port nobody listens on (a real refused connection)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_beluga.orchestration.workflow._patience import (
    DEFAULT_PATIENCE,
    PATIENCE_ENV,
    Patience,
    default_patience,
    is_transient,
)
from prefect_beluga.testing.prefect_server import free_port


class Scripted(ThreadingHTTPServer):
    """Answers each GET with the next status of `script` (then 200), counting requests."""

    daemon_threads = True

    def __init__(self, script: list[int]) -> None:
        self.script, self.count = list(script), 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def do_GET(self) -> None:
        self.server.count += 1
        status = self.server.script.pop(0) if self.server.script else 200
        body = b'{"ok": true}' if status == 200 else b'{"detail": "scripted"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted([])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{server.server_port}/api"}):
            yield server
    finally:
        server.shutdown()
        server.server_close()


async def get(client) -> dict:
    return (await client.request("GET", "/thing")).json()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    ours = [r for r in caplog.records if r.name == "prefect_beluga.workflow"]
    return [r.getMessage() for r in ours if r.levelno == logging.WARNING]


def test_5xx_replies_are_retried_until_the_api_answers_with_one_warning(scripted: Scripted, caplog):
    scripted.script = [500, 504, 500]  # (502/503 Prefect's client retries itself, more slowly)
    caplog.set_level(logging.INFO, logger="prefect_beluga.workflow")

    async def call() -> dict:
        async with Patience("a test call", patience=30) as api:
            return await api(get)

    assert asyncio.run(call()) == {"ok": True}
    assert scripted.count == 4
    assert len(warnings_of(caplog)) == 1
    assert "HTTP 500 during a test call" in warnings_of(caplog)[0]
    assert any("answers again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_4xx_replies_are_never_retried(scripted: Scripted):
    scripted.script = [404]

    async def call() -> dict:
        async with Patience("a test call", patience=30) as api:
            return await api(get)

    with pytest.raises(httpx.HTTPStatusError) as caught:
        asyncio.run(call())
    assert caught.value.response.status_code == 404 and not is_transient(caught.value)
    assert scripted.count == 1


def test_a_refused_connection_is_retried_for_the_patience_then_raised_with_a_note(caplog):
    caplog.set_level(logging.WARNING, logger="prefect_beluga.workflow")
    attempts = []

    async def call() -> None:
        async with Patience("a test call", patience=1.5) as api:

            async def op(client) -> None:
                attempts.append(time.monotonic())
                await get(client)

            # Two callers in one outage: one warning between them.
            await asyncio.gather(api(op), Patience("another call", patience=1.5)(op), return_exceptions=False)

    with temporary_settings({PREFECT_API_URL: f"http://user:hunter2@127.0.0.1:{free_port()}/api"}):
        started = time.monotonic()
        with pytest.raises(httpx.ConnectError) as caught:
            asyncio.run(call())
    assert 1.5 <= time.monotonic() - started < 15
    assert len(attempts) >= 4  # backoff from 0.25 s, not one try per Prefect retry cycle
    assert any("gave up" in note and "hunter2" not in note for note in caught.value.__notes__)
    assert len(warnings_of(caplog)) == 1
    assert "hunter2" not in warnings_of(caplog)[0] and "ConnectError" in warnings_of(caplog)[0]


def test_a_deadline_bounds_the_retries(scripted: Scripted):
    scripted.script = [500] * 1000

    async def call() -> dict:
        async with Patience("a test call", deadline=time.monotonic() + 1.0, patience=300) as api:
            return await api(get)

    started = time.monotonic()
    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(call())
    assert time.monotonic() - started < 10


def test_the_default_patience_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(PATIENCE_ENV, raising=False)
    assert default_patience() == DEFAULT_PATIENCE == 120.0
    monkeypatch.setenv(PATIENCE_ENV, "7.5")
    assert default_patience() == 7.5
    monkeypatch.setenv(PATIENCE_ENV, "soon")
    with pytest.raises(ValueError, match=PATIENCE_ENV):
        default_patience()


def test_what_counts_as_an_outage():
    request = httpx.Request("GET", "http://127.0.0.1/api/x")
    assert is_transient(httpx.ConnectError("refused", request=request))
    assert is_transient(httpx.ReadTimeout("slow", request=request))
    assert is_transient(httpx.RemoteProtocolError("cut", request=request))
    assert is_transient(ConnectionResetError())
    assert is_transient(httpx.HTTPStatusError("x", request=request, response=httpx.Response(500, request=request)))
    assert not is_transient(httpx.HTTPStatusError("x", request=request, response=httpx.Response(409, request=request)))
    assert not is_transient(FileNotFoundError("a result file"))
    assert not is_transient(ValueError("a bug"))
