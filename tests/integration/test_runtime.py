"""`orchestration/_api_clients.py`: the API clients a run uses (one pair per loop, a busy-retry
transport), shared clients inside a user's flow, guarded Prefect internals, auth."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import warnings
import weakref
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.context import AsyncClientContext
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_URL,
    PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED,
    temporary_settings,
)

from prefect_beluga import Chain, Graph
from prefect_beluga.orchestration import _api_clients as clients
from prefect_beluga.orchestration import _prefect_internals as internals
from prefect_beluga.testing.helpers import eventually
from prefect_beluga.testing.prefect_retries import PrefectClientRetries


async def add_one(state: dict) -> dict:
    return {"count": state["count"] + 1}


def small_graph(subflow: bool = True) -> Graph:
    graph = Graph(name="runtime-graph", subflow=subflow)
    graph.add_node("a", add_one)
    graph.add_node("b", lambda state: {"b": state["count"]})
    graph.add_edge("a", "b")
    graph.set_entry_point("a")
    graph.set_finish_point("b")
    return graph


# -- the API clients a run uses ----------------------------------------------------------------


async def test_runs_reuse_one_api_client_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first run on a loop, a chain's flow runs build no new Prefect API client
    (each would load the CA bundle into a new SSL context)."""
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    chain = Chain([add_one] * 2, name="client-reuse")
    assert await chain.ainvoke({"count": 0}) == {"count": 2}
    built: list[str] = []
    for cls in (PrefectClient, SyncPrefectClient):
        original = cls.__init__

        def counting(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            built.append(type(self).__name__)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    results = await asyncio.gather(*(chain.ainvoke({"count": i}) for i in range(3)))
    assert results == [{"count": 2}, {"count": 3}, {"count": 4}]
    assert built == []


async def test_busy_retry_transport_absorbs_retryable_503s() -> None:
    """A 503 without Retry-After (a rolled-back SQLite write) is retried within milliseconds;
    a 503 with Retry-After, or one that persists, goes up to Prefect's client unchanged."""
    import httpx

    from prefect_beluga.orchestration._api_clients import BusyRetryTransport

    class Scripted(httpx.AsyncBaseTransport):
        def __init__(self, replies: list[httpx.Response]) -> None:
            self.replies = replies
            self.bodies: list[bytes] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.bodies.append(await request.aread())
            return self.replies.pop(0)

    busy = lambda: httpx.Response(503, json={"exception_message": "Service Unavailable"})  # noqa: E731
    inner = Scripted([busy(), busy(), httpx.Response(201, json={"id": 1})])
    async with httpx.AsyncClient(transport=BusyRetryTransport(inner), base_url="http://api") as client:
        started = asyncio.get_running_loop().time()
        reply = await client.post("/flow_runs/", json={"name": "x"})
        assert reply.status_code == 201
        assert asyncio.get_running_loop().time() - started < 0.5
    assert inner.bodies == [b'{"name":"x"}'] * 3  # the same request, resent whole

    inner = Scripted([httpx.Response(503, headers={"Retry-After": "30"})])
    transport = BusyRetryTransport(inner)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/health")).status_code == 503
    assert transport.retried == 0

    transport = BusyRetryTransport(Scripted([busy() for _ in range(10)]))
    transport.delays = (0.0, 0.0)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/health")).status_code == 503
    assert transport.retried == 2


# -- a busy API inside a user's flow -------------------------------------------------------------


@pytest.fixture
def busy_subflow_creation(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The API answers 503 (no Retry-After), once, to the next creation of a subflow run.

    That is what the SQLite API does when the write loses a race with its event writer. Every
    httpx transport is patched, so whichever client creates the run meets it. Returns what was
    injected ("fired") and the 503s the API itself answered meanwhile ("real": the same race,
    met by any request, e.g. the user's own flow run, which Prefect's client creates).
    """
    seen: dict[str, list[str]] = {"fired": [], "real": []}
    originals = {
        cls: cls.handle_async_request for cls in (httpx.AsyncHTTPTransport, httpx.ASGITransport)
    }

    def patched(cls):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if not seen["fired"] and request.method == "POST" and request.url.path.endswith("/flow_runs/"):
                body = json.loads(request.content or b"{}")
                if body.get("parent_task_run_id"):
                    seen["fired"].append(body.get("name") or "subflow")
                    return httpx.Response(503, json={"exception_message": "database is locked"})
            response = await originals[cls](self, request)
            if response.status_code == 503:
                seen["real"].append(f"{request.method} {request.url.path}")
            return response

        return handle_async_request

    for cls in originals:
        monkeypatch.setattr(cls, "handle_async_request", patched(cls))
    return seen


@pytest.mark.parametrize("kind", ["chain", "graph"])
async def test_inside_a_user_flow_a_busy_503_on_subflow_creation_skips_prefects_2s_retry(
    kind, busy_subflow_creation
):
    runnable = Chain([add_one, add_one], name="runtime-chain") if kind == "chain" else small_graph()

    @flow
    async def users_flow() -> dict:
        return await runnable.ainvoke({"count": 0})

    with PrefectClientRetries() as retries:
        result = await users_flow()
    assert result["count"] == (2 if kind == "chain" else 1)
    assert busy_subflow_creation["fired"], "the 503 was never injected: no subflow run was created"
    # The subflow was created through the shared client, which retried within milliseconds;
    # Prefect's own client (the caller's) would have logged a retry and waited ~2 s. Prefect's
    # client may still retry a 503 the API really answered to one of its own requests.
    assert retries.count(503) <= len(busy_subflow_creation["real"]), busy_subflow_creation


async def test_inside_a_user_flow_the_subflow_uses_the_shared_client_and_gives_the_callers_back():
    seen: dict[str, object] = {}

    async def look(state: dict) -> dict:
        seen["inside"] = AsyncClientContext.get().client
        return {}

    chain = Chain([look], name="runtime-look")

    @flow
    async def users_flow() -> None:
        seen["caller"] = AsyncClientContext.get().client
        await chain.ainvoke({})
        seen["after"] = AsyncClientContext.get().client

    await users_flow()
    assert seen["inside"] is not seen["caller"]
    assert seen["after"] is seen["caller"]
    # the shared client the subflow used is this loop's, behind the busy-retry transport
    assert isinstance(clients.shared_transport(), clients.BusyRetryTransport)


# -- guarded internals ------------------------------------------------------------------------------


@pytest.fixture
def fresh_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No cached clients and no warnings given yet, so each simulation starts clean."""
    monkeypatch.setattr(clients, "_async_clients", weakref.WeakKeyDictionary())
    monkeypatch.setattr(clients, "_sync_clients", {})
    internals.reset_warnings()
    yield
    internals.reset_warnings()


@pytest.mark.parametrize(
    "attribute, missing, named",
    [
        ("CONTEXT_VAR_ATTR", "__renamed_var__", "AsyncClientContext.__renamed_var__"),
        ("CLOSED_ATTR", "_renamed_closed", "PrefectClient._renamed_closed"),
        ("TRANSPORT_ATTR", "_renamed_transport", "_renamed_transport (httpx transport)"),
    ],
)
def test_a_missing_prefect_internal_falls_back_with_one_warning(
    monkeypatch, fresh_runtime, attribute, missing, named
):
    monkeypatch.setattr(internals, attribute, missing)
    chain = Chain([add_one, add_one], name="runtime-guarded")
    graph = small_graph()

    @flow
    async def users_flow() -> tuple[dict, dict]:
        return await chain.ainvoke({"count": 0}), await graph.ainvoke({"count": 5})

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            assert chain.invoke({"count": 0})["count"] == 2
            assert graph.invoke({"count": 0})["b"] == 1
        inside_chain, inside_graph = asyncio.run(users_flow())
    assert inside_chain["count"] == 2 and inside_graph["b"] == 6
    ours = [w for w in caught if issubclass(w.category, internals.PrefectInternalsWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    message = str(ours[0].message)
    assert named in message
    import prefect

    assert f"Prefect {prefect.__version__}" in message


# -- at exit: Prefect's workers send what they hold --------------------------------------------


def test_prefects_workers_hold_nothing_once_they_have_sent_it():
    """At exit the runtime waits until Prefect's events and API log workers hold nothing
    (`_runtime._wait_for_prefect_workers`, at most EXIT_SEND_SECONDS). Once they have sent a
    run's logs and events, they count 0: the API log worker batches its items and never marks
    them done, so counting unfinished items (as before) held every script's exit for the whole
    EXIT_SEND_SECONDS after its first log line."""
    from prefect import get_run_logger
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    def noisy(state: dict) -> dict:
        get_run_logger().warning("a line for the API log worker")
        return {"done": True}

    assert Chain([noisy], name="runtime-logs").invoke({})["done"] is True
    assert any(isinstance(worker, APILogWorker) for worker in APILogWorker._instances.values())
    assert eventually(
        lambda: internals.pending_service_items(EventsWorker, APILogWorker) == 0,
        "Prefect's workers to have sent the run's logs and events", timeout=30,
    )


@pytest.mark.parametrize("attribute", ["INSTANCES_ATTR", "QUEUE_ATTR"])
def test_without_prefects_service_attributes_nothing_waits_at_exit_and_one_warning_says_so(
    monkeypatch, fresh_runtime, attribute
):
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    assert Chain([add_one], name="runtime-workers").invoke({"count": 0})["count"] == 1  # the workers run
    monkeypatch.setattr(internals, attribute, "_renamed")
    with pytest.warns(internals.PrefectInternalsWarning) as caught:
        assert internals.pending_service_items(EventsWorker, APILogWorker) is None
        assert internals.pending_service_items(EventsWorker, APILogWorker) is None
    import prefect

    assert len(caught) == 1 and "._renamed" in str(caught[0].message)
    assert f"Prefect {prefect.__version__}" in str(caught[0].message)


# -- auth -----------------------------------------------------------------------------------------


@pytest.fixture
def recording_api() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering `{}` to anything; records each Authorization header."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization", ""))
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api", seen
    finally:
        server.shutdown()
        server.server_close()


def basic(auth: str) -> str:
    return "Basic " + base64.b64encode(auth.encode()).decode()


async def test_shared_clients_carry_the_auth_string_of_the_current_settings(recording_api):
    url, seen = recording_api

    async def hello_with(auth: str | None) -> object:
        settings = {PREFECT_API_URL: url, PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED: False}
        settings[PREFECT_API_AUTH_STRING] = auth
        with temporary_settings(updates=settings):
            async with clients.api_clients():
                client = AsyncClientContext.get().client
                await client.hello()
                return client

    first = await hello_with("alice:secret-1")
    again = await hello_with("alice:secret-1")
    changed = await hello_with("bob:secret-2")
    none = await hello_with(None)
    assert seen == [basic("alice:secret-1"), basic("alice:secret-1"), basic("bob:secret-2"), ""]
    assert again is first  # same settings: the shared client is reused
    assert changed is not first and none is not changed  # new settings: a new client
    assert not any("secret" in part for part in clients._api_key())  # cache keys hold digests


async def test_events_are_read_back_page_by_page_with_prefects_client_and_without_its_methods():
    """Workflow streams read what a run published through `_prefect_internals.read_events`:
    Prefect's public `read_events`/`read_events_page`, or (a Prefect without them) its REST
    route and page URLs, with one warning and the same events in the same order."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.events import Event
    from prefect.events.filters import EventFilter, EventOrder, EventResourceFilter

    from prefect_beluga.testing.helpers import aeventually

    resource = f"prefect-beluga.test.{uuid.uuid4().hex}"
    sent = [Event(event="beluga.test", resource={"prefect.resource.id": resource}, payload={"seq": i})
            for i in range(7)]
    wanted = EventFilter(resource=EventResourceFilter(id=[resource]), order=EventOrder.ASC)

    async def read_all(client) -> list[int]:
        events, next_page = await internals.read_events(client, wanted, limit=3)  # three pages
        while next_page:
            more, next_page = await internals.read_events_page(client, next_page)
            events += more
        return [event.payload["seq"] for event in events]

    async with get_client() as client:
        await client.request("POST", "/events", json=[event.model_dump(mode="json") for event in sent])
        await aeventually(lambda: _equal(read_all(client), list(range(7))), "the 7 events, in order")

        class WithoutEventMethods:  # a Prefect client from before read_events existed
            request = client.request
            _client = client._client

        internals.reset_warnings()
        with pytest.warns(internals.PrefectInternalsWarning, match="read_events"):
            assert await read_all(WithoutEventMethods()) == list(range(7))
        internals.reset_warnings()


async def _equal(read, expected) -> bool:
    return await read == expected
