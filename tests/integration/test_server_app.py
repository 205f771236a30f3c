"""The app over HTTP: two replicas (`python -m prefect_beluga.server` subprocesses) on one real
`prefect server`, an agent workflow on the loopback OpenAI server.

SSE framing and AG-UI events, `Last-Event-ID` resume on the other replica (nothing missed,
nothing twice), approvals through the signal route, cancel, idempotency, 401/404/409/422, and no
secret in any response or log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydantic
import pytest
from ag_ui.core import Event

from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.app_server import AppServer
from prefect_beluga.testing.helpers import eventually
from prefect_beluga.testing.prefect_server import PrefectServer

HERE = Path(__file__).parent
TOKEN = f"app-token-{uuid.uuid4().hex}"
KEY = f"sk-server-{uuid.uuid4().hex}"
WORKFLOWS = ["server_fixtures:support", "server_fixtures:echo", "server_fixtures:gate"]
ANSWER = "Order A1 was refunded: forty euros are on their way back to you."
AGUI = pydantic.TypeAdapter(Event)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def llm() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, chunk_delay=0.03) as server:
        yield server


@pytest.fixture(scope="module")
def replicas(llm: OpenAIServer) -> Iterator[tuple[AppServer, AppServer]]:
    """Two app processes on one Prefect API (SQLite): the API is the only state they share."""
    with PrefectServer() as api:
        env = dict(api.env, BELUGA_TEST_OPENAI_URL=llm.base_url, BELUGA_TEST_OPENAI_KEY=KEY)
        options = dict(env=env, token=TOKEN, pythonpath=[str(HERE)],
                       args=["--input-model", "echo=server_fixtures:Question"])
        with AppServer(WORKFLOWS, **options) as a, AppServer(WORKFLOWS, **options) as b:
            yield a, b


def sse(app: AppServer, run_id: str, *, last_event_id: str | None = None, stop_after: int | None = None,
        on_event=None, fmt: str | None = None, timeout: float = 90) -> tuple[list[tuple[str | None, str]], str]:
    """Read a run's SSE stream: the (id, data) messages, and the raw text (to check framing)."""
    headers = dict(app.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    url = f"{app.url}/runs/{run_id}/events" + (f"?format={fmt}" if fmt else "")
    messages: list[tuple[str | None, str]] = []
    raw: list[str] = []
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        current_id, data = None, []
        for line in reply.iter_lines():
            raw.append(line)
            if line.startswith("id: "):
                current_id = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                messages.append((current_id, "\n".join(data)))
                if on_event is not None:
                    on_event(current_id, json.loads(messages[-1][1]))
                current_id, data = None, []
                if stop_after is not None and len(messages) >= stop_after:
                    break
    return messages, "\n".join(raw)


def start(app: AppServer, workflow_id: str, input, **headers) -> str:
    # A generous timeout: the first run an app process starts waits for its first Prefect client
    # (over 5 s, httpx's default, on a loaded CI machine); this file tests behaviour, not latency.
    reply = httpx.post(f"{app.url}/runs", json={"workflow_id": workflow_id, "input": input},
                       headers={**app.headers, **headers}, timeout=60)
    assert reply.status_code == 201, reply.text
    return reply.json()["run_id"]


def script_refund(llm: OpenAIServer) -> None:
    llm.reply_with({"tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1"}}]},
                   {"tool_calls": [{"name": "refund", "arguments": {"order_id": "A1", "amount": 40}}]},
                   ANSWER)


def approve_when_asked(app: AppServer, run_id: str, seen: list):
    def on_event(event_id, event):
        seen.append(event)
        if event.get("type") == "CUSTOM" and event.get("name") == "approval_requested":
            reply = httpx.post(f"{app.url}/runs/{run_id}/signals/{event['value']['signal']}",
                               json={"approved": True, "by": "test"}, headers=app.headers)
            assert reply.status_code == 202, reply.text
    return on_event


def test_health_is_open_and_every_other_route_needs_the_token(replicas):
    a, _ = replicas
    assert httpx.get(f"{a.url}/health").json() == {"status": "ok"}
    run = str(uuid.uuid4())
    routes = [("GET", "/"), ("GET", "/workflows"), ("POST", "/runs"), ("GET", f"/runs/{run}"),
              ("GET", f"/runs/{run}/events"), ("POST", f"/runs/{run}/signals/approve:refund"),
              ("POST", f"/runs/{run}/cancel"), ("GET", "/static/chat.js")]
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}):
        for method, path in routes:
            reply = httpx.request(method, a.url + path, headers=headers, json={})
            assert reply.status_code == 401, (method, path, headers, reply.status_code)
            assert TOKEN not in reply.text
    assert httpx.get(f"{a.url}/workflows", headers=a.headers).status_code == 200
    # the page's sign-in: the cookie is an HMAC of the token, not the token
    with httpx.Client(base_url=a.url) as browser:
        assert browser.post("/login", data={"token": "nope"}).status_code == 401
        reply = browser.post("/login", data={"token": TOKEN})
        assert reply.status_code == 303 and TOKEN not in reply.headers["set-cookie"]
        assert "HttpOnly" in reply.headers["set-cookie"] and "SameSite=strict" in reply.headers["set-cookie"]
        assert browser.get("/").status_code == 200 and browser.get("/workflows").status_code == 200
        # a cookie-authorized request that changes something must come from the app's origin
        evil = browser.post("/runs", json={"workflow_id": "echo", "input": {"question": "q"}},
                            headers={"Origin": "https://evil.example"})
        assert evil.status_code == 401


def test_bad_input_is_422_naming_the_field_and_unknown_things_404(replicas):
    a, _ = replicas
    h = a.headers

    def post(body, **extra):
        return httpx.post(f"{a.url}/runs", content=body if isinstance(body, bytes) else json.dumps(body),
                          headers={**h, "Content-Type": "application/json", **extra})

    cases = [
        (post(b"{not json"), "body"),
        (post([1, 2]), "body"),
        (post({"input": {}}), "workflow_id"),
        (post({"workflow_id": "support"}), "input"),
        (post({"workflow_id": "support", "input": 42}), "input"),
        (post({"workflow_id": "echo", "input": {"max_words": 3}}), "input.question"),
        (post({"workflow_id": "echo", "input": {"question": "q", "max_words": "many"}}), "input.max_words"),
        (post({"workflow_id": "echo", "input": {"question": "q"}}, **{"Idempotency-Key": "x" * 300}),
         "Idempotency-Key"),
    ]
    for reply, field in cases:
        assert reply.status_code == 422, (field, reply.text)
        assert reply.json()["field"] == field and field.split(".")[-1] in reply.json()["error"]
    assert post({"workflow_id": "nope", "input": {}}).status_code == 404
    run_id = start(a, "echo", {"question": "q"})
    for method, path, field in [("GET", f"/runs/{run_id}/events?format=xml", "format"),
                                ("POST", f"/runs/{run_id}/signals/bad name!", "name")]:
        reply = httpx.request(method, a.url + path, headers=h)
        assert reply.status_code == 422 and reply.json()["field"] == field, reply.text
    reply = httpx.get(f"{a.url}/runs/{run_id}/events", headers={**h, "Last-Event-ID": "garbage"})
    assert reply.status_code == 422 and reply.json()["field"] == "Last-Event-ID"
    for missing in (str(uuid.uuid4()), "not-a-run"):
        for method, path in [("GET", f"/runs/{missing}"), ("GET", f"/runs/{missing}/events"),
                             ("POST", f"/runs/{missing}/cancel"), ("POST", f"/runs/{missing}/signals/go")]:
            reply = httpx.request(method, a.url + path, headers=h)
            assert reply.status_code == 404, (method, path, reply.text)
            assert "api" not in reply.text.lower()  # no Prefect API URL in a client's error


def test_an_agent_run_streams_agui_events_and_an_approval_resumes_it_on_either_replica(replicas, llm):
    a, b = replicas
    script_refund(llm)
    run_id = start(a, "support", {"input": "Refund order A1"})
    seen: list = []
    messages, raw = sse(b, run_id, on_event=approve_when_asked(b, run_id, seen))  # started on A, read on B

    # SSE framing: `retry:` first, then "id: n" + "data: <json>" messages, blank-line separated
    assert raw.startswith("retry: 1000\n")
    ids = [m[0] for m in messages]
    assert all(i is not None for i in ids)
    positions = [int(i.split("~")[0]) for i in ids]
    assert positions == sorted(positions) and len(set(ids)) == len(ids)
    events = [AGUI.validate_json(data) for _, data in messages]  # every one a valid AG-UI event
    types = [e.type.value for e in events]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert events[-1].result == {"output": ANSWER}
    calls = [e for e in events if e.type.value == "TOOL_CALL_START"]
    assert [c.tool_call_name for c in calls] == ["lookup_order", "refund"]
    refund_id = calls[1].tool_call_id
    args = "".join(e.delta for e in events if e.type.value == "TOOL_CALL_ARGS" and e.tool_call_id == refund_id)
    assert json.loads(args) == {"order_id": "A1", "amount": 40}
    results = [e for e in events if e.type.value == "TOOL_CALL_RESULT"]
    assert [r.tool_call_id for r in results] == [c.tool_call_id for c in calls]
    assert results[1].content == "refunded 40.00 EUR on order A1"
    approvals = [e for e in events if e.type.value == "CUSTOM" and e.name == "approval_requested"]
    assert len(approvals) == 1
    value = approvals[0].value
    assert value["tool"] == "refund" and value["tool_call_id"] == calls[1].tool_call_id
    assert value["arguments"] == {"order_id": "A1", "amount": 40} and value["signal"] == "approve:refund"
    # the approval came after its tool call and before its result
    position = events.index(approvals[0])
    assert types.index("TOOL_CALL_END") < position < events.index(results[1])
    text = "".join(e.delta for e in events if e.type.value == "TEXT_MESSAGE_CONTENT")
    assert text == ANSWER
    assert sum(t == "TEXT_MESSAGE_CONTENT" for t in types) > 1  # streamed, not one block
    assert types.count("TEXT_MESSAGE_START") == types.count("TEXT_MESSAGE_END")
    snapshots = [e.snapshot for e in events if e.type.value == "STATE_SNAPSHOT"]
    assert snapshots[-1]["nodes"] and set(snapshots[-1]["nodes"].values()) == {"done"}

    # the finished run, read again on A: the same events, the same ids (the approval is not
    # announced again: the run no longer waits)
    again, _ = sse(a, run_id)
    stream_only = [m for m in messages if "approval_requested" not in m[1]]
    assert [(i.split("~")[0], d) for i, d in again] == [(i.split("~")[0], d) for i, d in stream_only]
    status = httpx.get(f"{a.url}/runs/{run_id}", headers=a.headers).json()
    assert status["status"] == "COMPLETED" and status["result"] == {"output": ANSWER}
    assert status["prefect_url"].endswith(f"/runs/flow-run/{run_id}")
    # the plain shape: the package's own events
    plain, _ = sse(b, run_id, fmt="plain")
    kinds = [next(iter(json.loads(d))) for _, d in plain]
    assert kinds[-1] == "__end__" and "__tool_call__" in kinds and "__token__" in kinds


def test_last_event_id_resumes_on_the_other_replica_missing_nothing_and_repeating_nothing(replicas, llm):
    a, b = replicas
    llm.reply_with("One two three four five six seven eight nine ten eleven twelve thirteen fourteen.")
    run_id = start(a, "support", {"input": "Count"})
    first, _ = sse(a, run_id, stop_after=6)  # the client drops mid-run...
    rest, _ = sse(b, run_id, last_event_id=first[-1][0])  # ...and reconnects to the other replica
    whole, _ = sse(a, run_id)
    assert first + rest == whole
    assert json.loads(whole[-1][1])["type"] == "RUN_FINISHED"
    # resuming at the last event: only the terminal event again, under its own id (a client
    # that had it can tell; one whose cursor passed it still learns that the run is over)
    tail, _ = sse(b, run_id, last_event_id=whole[-1][0])
    assert tail == [whole[-1]]
    beyond, _ = sse(b, run_id, last_event_id=str(int(whole[-1][0]) + 100))
    assert beyond == [(str(int(whole[-1][0]) + 100), whole[-1][1])]
    plain, _ = sse(a, run_id, last_event_id="100000", fmt="plain")
    assert [json.loads(d) for _, d in plain] == [{"__end__": json.loads(whole[-1][1])["result"]}]


def test_a_reconnect_after_an_approval_announcement_does_not_announce_it_twice(replicas, llm):
    a, b = replicas
    script_refund(llm)
    run_id = start(a, "support", {"input": "Refund order A1"})
    seen: list[tuple[str, dict]] = []
    # read until the approval is announced, then drop the connection
    with httpx.stream("GET", f"{a.url}/runs/{run_id}/events", headers=a.headers, timeout=60) as reply:
        current = None
        for line in reply.iter_lines():
            if line.startswith("id: "):
                current = line[4:]
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                seen.append((current, event))
                if event.get("name") == "approval_requested":
                    break
    last_id = seen[-1][0]
    assert "~" in last_id
    reply = httpx.post(f"{b.url}/runs/{run_id}/signals/approve:refund", json={"approved": False, "reason": "no"},
                       headers=b.headers)
    assert reply.status_code == 202
    rest, _ = sse(b, run_id, last_event_id=last_id)
    names = [json.loads(d).get("name") for _, d in rest]
    assert "approval_requested" not in names
    result = [json.loads(d) for _, d in rest if json.loads(d)["type"] == "TOOL_CALL_RESULT"]
    assert "was not approved: no" in result[-1]["content"]
    seen_ids = [i for i, _ in seen] + [i for i, _ in rest]
    assert len(set(seen_ids)) == len(seen_ids)


def test_the_idempotency_key_header_gives_one_run_across_replicas(replicas):
    a, b = replicas
    key = f"order-{uuid.uuid4().hex}"
    first = start(a, "echo", {"question": "q"}, **{"Idempotency-Key": key})
    second = start(b, "echo", {"question": "q"}, **{"Idempotency-Key": key})
    assert first == second
    assert start(a, "echo", {"question": "q"}) != first
    messages, _ = sse(b, first)
    end = json.loads(messages[-1][1])
    assert end["type"] == "RUN_FINISHED" and end["result"] == {"echo": {"question": "q", "max_words": 50}}


def test_cancel_ends_the_run_cancelled_and_its_stream_says_so(replicas):
    a, b = replicas
    run_id = start(a, "gate", {})
    eventually(lambda: httpx.get(f"{b.url}/runs/{run_id}", headers=b.headers).json()["status"] == "PAUSED",
               "the run to pause, seen through the other replica")
    status = httpx.get(f"{b.url}/runs/{run_id}", headers=b.headers).json()
    assert status["waiting_for"] == "go"
    reply = httpx.post(f"{b.url}/runs/{run_id}/cancel", headers=b.headers)
    assert reply.status_code == 202
    messages, _ = sse(a, run_id)
    events = [json.loads(d) for _, d in messages]
    assert [e for e in events if e.get("name") == "signal_requested"] == []  # it no longer waits
    assert events[-1]["type"] == "RUN_FINISHED" and events[-1]["outcome"] == {"type": "cancelled"}
    assert httpx.get(f"{a.url}/runs/{run_id}", headers=a.headers).json()["status"] == "CANCELLED"
    late = httpx.post(f"{a.url}/runs/{run_id}/signals/go", json={}, headers=a.headers)
    assert late.status_code == 409 and "already ended" in late.json()["error"]


def test_no_secret_in_any_response_or_log(replicas, llm):
    a, b = replicas
    script_refund(llm)
    run_id = start(a, "support", {"input": "Refund order A1"})
    seen: list = []
    _, raw = sse(b, run_id, on_event=approve_when_asked(b, run_id, seen))
    bodies = [raw, httpx.get(f"{a.url}/runs/{run_id}", headers=a.headers).text,
              httpx.get(f"{a.url}/workflows", headers=a.headers).text,
              httpx.get(f"{a.url}/", headers=a.headers).text]
    for text in [*bodies, a.log(), b.log()]:
        assert TOKEN not in text and KEY not in text
