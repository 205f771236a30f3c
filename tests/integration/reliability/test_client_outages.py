"""Clients ride out outages: a real `prefect server` on a throwaway PostgreSQL, SIGKILLed and
restarted, or its database stopped (``pg_ctl -m fast stop``) and started, while callers wait.

Runs of `outage_flows.held` hold in their step on two process workers (doing nothing the API
must answer) while the API is down; six `get_result(timeout=...)` callers wait on them, and
`status`, `query`, `signal` and two `execute` calls with one idempotency key are issued during
the outage. None of them may fail: each waits the outage out, and the key makes one run. A
streamed run read by `stream` across a server restart yields every event exactly once.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import workflow_fixtures as fx

from prefect_beluga.core._sync import run_sync
from prefect_beluga.testing.helpers import create_process_pool, eventually
from prefect_beluga.testing.prefect_server import PrefectServer, postgres_bin_dir

from . import outage_flows as of

POOL = "beluga-outages"
DOWNTIME = 15.0  # seconds the server or its database stays down

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(postgres_bin_dir() is None, reason="PostgreSQL is not installed (apt-get install postgresql)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """The server, with `held` deployed (no recovery automations: this is about clients) and two
    workers that each run up to three runs at once."""
    folder = tmp_path_factory.mktemp("outages")
    with PrefectServer(database="postgresql") as server, server.settings():
        run_sync(create_process_pool(POOL))
        of.held.deploy(work_pool=POOL, resume_lost_runs=False)
        workers = [fx.start_worker(server, POOL, f"outage-worker-{i}", folder, limit=3) for i in (1, 2)]
        try:
            yield server
        finally:
            for worker in workers:
                fx.kill_group(worker)


def submit(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    """`fn(*args, **kwargs)` in a thread of `pool`, with this thread's context (the settings
    pointing at the test server)."""
    return pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)


def wait_for_lines(log: Path, count: int, seconds: float = 120) -> None:
    def started() -> bool:
        text = log.read_text() if log.exists() else ""
        assert len(text.splitlines()) >= count, f"{count} runs never started: {text}"
        return True

    eventually(started, f"{count} runs to start", timeout=seconds)


async def count_signals(run_id: str) -> int:
    from prefect.client.orchestration import get_client

    from prefect_beluga.orchestration.signals import SIGNAL_KEY_PREFIX

    async with get_client() as client:
        found = await client.filter_flow_run_input(
            flow_run_id=uuid.UUID(run_id), key_prefix=SIGNAL_KEY_PREFIX, limit=100, exclude_keys=set()
        )
    return len(found)


def kill_server(server: PrefectServer) -> Callable[[], None]:
    server.kill()
    return server.restart


def stop_database(server: PrefectServer) -> Callable[[], None]:
    assert server.postgres is not None
    server.postgres.stop_server()
    return server.postgres.start_server


@pytest.mark.parametrize("outage", [kill_server, stop_database], ids=["server-SIGKILL", "postgres-fast-stop"])
def test_callers_wait_out_the_outage_and_an_idempotent_execute_makes_one_run(
    server: PrefectServer, outage: Callable[[PrefectServer], Callable[[], None]], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.INFO, logger="prefect_beluga.workflow")
    log, gate, key = tmp_path / "started.log", tmp_path / "gate", f"during-{uuid.uuid4().hex[:8]}"
    with server.settings(), ThreadPoolExecutor(16) as pool:
        runs = [of.held.execute({"n": n, "log": str(log), "gate": str(gate)}) for n in range(3)]
        wait_for_lines(log, 3)  # all three Running on the workers
        waiting = [submit(pool, of.held.get_result, wid, rid, timeout=240) for wid, rid in runs for _ in (1, 2)]
        time.sleep(1.0)  # the callers are polling

        recover = outage(server)
        run0, run1 = runs[0][1], runs[1][1]
        during: dict[str, Future[Any]] = {
            "status": submit(pool, of.held.status, run0),
            "query": submit(pool, of.held.query, run0),
            "signal": submit(pool, of.held.signal, run1, "poke", {"k": 1}),
            "execute-1": submit(pool, of.held.execute, {"n": 9, "log": str(log), "gate": str(gate)}, key),
            "execute-2": submit(pool, of.held.execute, {"n": 9, "log": str(log), "gate": str(gate)}, key),
        }
        time.sleep(DOWNTIME)
        failed = {name: f.exception() for name, f in {**during, "get_result": waiting[0]}.items() if f.done()}
        assert not failed, f"calls gave up during the outage: {failed}"
        recover()
        answers = {name: f.result(timeout=240) for name, f in during.items()}  # runs still held
        gate.touch()
        results = [f.result(timeout=240) for f in waiting]
        assert answers["execute-1"] == answers["execute-2"]
        extra = of.held.get_result(*answers["execute-1"], timeout=180)
        keyed = [r for r in of.held.list_runs() if r.idempotency_key == key]
        signals = run_sync(count_signals(run1))

    assert [r["n"] for r in results] == [0, 0, 1, 1, 2, 2]
    assert {r["worker"] for r in results} <= {"outage-worker-1", "outage-worker-2"}
    assert answers["status"] == "RUNNING"
    assert answers["query"] == {} and answers["signal"] is None and signals == 1
    assert extra["n"] == 9 and len(keyed) == 1 and keyed[0].deployment_id
    lines = log.read_text().splitlines()
    assert sorted(line.split()[1] for line in lines) == ["0", "1", "2", "9"]  # the keyed run ran once
    unreachable = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.getMessage()]
    assert 1 <= len(unreachable) <= 3, [r.getMessage() for r in unreachable]  # per outage, not per attempt
    assert server.auth_string is None or all(server.auth_string not in r.getMessage() for r in caplog.records)


async def count_token_events(run_id: str) -> int:
    from prefect.client.orchestration import get_client

    from prefect_beluga.orchestration.workflow._tokens import TOKENS_EVENT, resource_id

    body = {"filter": {"resource": {"id": [resource_id(run_id)]}, "event": {"name": [TOKENS_EVENT]}}, "limit": 50}
    async with get_client() as client:
        return len((await client.request("POST", "/events/filter", json=body)).json()["events"])


def test_a_stream_read_across_a_server_restart_yields_every_event_once(server: PrefectServer, tmp_path: Path):
    gate = tmp_path / "gate"
    events: list[dict[str, Any]] = []

    def tokens() -> list[dict[str, Any]]:
        return [e["__token__"] for e in events if "__token__" in e]

    def texts() -> str:
        return "".join(token["text"] for token in tokens())

    def read(run_id: str) -> None:
        for event in of.spoken.stream(run_id):
            events.append(event)

    with server.settings(), ThreadPoolExecutor(1) as pool:
        _, run_id = of.spoken.execute({"gate": str(gate)}, stream=True)  # runs here, in the background
        reader = submit(pool, read, run_id)

        # The first part was read live, and the server has stored it (events it had only in memory
        # when killed would be lost to every reader, not only this one).
        def first_part_stored() -> bool:
            stored = texts() == "".join(of.BEFORE) and run_sync(count_token_events(run_id)) >= len(tokens())
            if not stored and reader.done():  # the reader ended: fail now
                pytest.fail(f"the reader ended first: {(texts(), reader.exception())}")
            assert stored, texts()
            return True

        eventually(first_part_stored, "the first part to be read live and stored", timeout=120)
        server.kill()
        time.sleep(DOWNTIME / 2)
        assert not reader.done(), reader.exception()
        server.restart()
        gate.touch()
        reader.result(timeout=180)
    assert texts() == "".join(of.BEFORE + of.AFTER)  # each chunk once, in order
    assert [node for node, _ in itertools.groupby(token["node"] for token in tokens())] == ["before", "after"]
    assert events[-1]["__end__"]["said"] == "".join(of.BEFORE + of.AFTER)


def test_an_execute_whose_reply_is_lost_makes_one_run_that_runs_once(server: PrefectServer, tmp_path: Path):
    """The API created the run but its reply was lost (a `LossyProxy` cuts it), so the create is
    sent again: with Prefect's own retries off, `Patience` resends it; with them on, Prefect's
    client does. Either way the same run comes back and runs once."""
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from prefect_beluga import Orchestrator
    from prefect_beluga.testing.lossy_proxy import LossyProxy

    log, gate = tmp_path / "started.log", tmp_path / "gate"
    gate.touch()
    here = Orchestrator().create_workflow(of.hold, workflow_id="outage-held", local=True)
    with server.settings(), LossyProxy(server.api_url) as proxy:
        before = len(of.held.list_runs(limit=200))
        with temporary_settings({PREFECT_API_URL: proxy.api_url, PREFECT_CLIENT_MAX_RETRIES: 0}):
            proxy.drop_replies("POST", "/api/flow_runs/", times=2)
            local = here.execute({"n": 1, "log": str(log), "gate": str(gate)})  # no key of its own
            proxy.drop_replies("POST", "/api/flow_runs/")
            keyed = here.execute({"n": 2, "log": str(log), "gate": str(gate)}, idempotency_key="lost-reply")
            assert here.execute({"n": 2, "log": str(log), "gate": str(gate)}, idempotency_key="lost-reply") == keyed
        with temporary_settings({PREFECT_API_URL: proxy.api_url}):
            proxy.drop_replies("POST", "/api/deployments/")
            deployed = of.held.execute({"n": 3, "log": str(log), "gate": str(gate)})
        results = [of.held.get_result(*ids, timeout=180)["n"] for ids in (local, keyed, deployed)]
        runs = of.held.list_runs(limit=200)
    # 201: created, reply lost; 200: the resent create of that run, which the API answered with it.
    assert [status for _, _, status in proxy.dropped] == [201, 200, 201, 201]
    assert results == [1, 2, 3] and len(runs) == before + 3
    assert sorted(line.split()[1] for line in log.read_text().splitlines()) == ["1", "2", "3"]  # each ran once
    listed = {r.run_id: r for r in runs}
    assert listed[local[1]].idempotency_key is None and listed[keyed[1]].idempotency_key == "lost-reply"
    assert listed[deployed[1]].deployment_id and not listed[local[1]].deployment_id


def test_a_signal_whose_reply_is_lost_is_recorded_once(server: PrefectServer, tmp_path: Path):
    """The API recorded the signal but its reply was lost: the resent request (by `Patience`
    with Prefect's retries off, by Prefect's client with them on, which then meets a 409) finds
    the signal its own first try recorded and adds nothing."""
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from prefect_beluga import Orchestrator
    from prefect_beluga.testing.lossy_proxy import LossyProxy

    log, gate = tmp_path / "started.log", tmp_path / "gate"
    here = Orchestrator().create_workflow(of.hold, workflow_id="outage-signalled", local=True)
    with server.settings(), LossyProxy(server.api_url) as proxy:
        _, run_id = here.execute({"n": 1, "log": str(log), "gate": str(gate)})
        wait_for_lines(log, 1)
        with temporary_settings({PREFECT_API_URL: proxy.api_url, PREFECT_CLIENT_MAX_RETRIES: 0}):
            proxy.drop_replies("POST", f"/api/flow_runs/{run_id}/input", exact=True)  # the create
            here.signal(run_id, "first", {"k": 1})
        with temporary_settings({PREFECT_API_URL: proxy.api_url}):
            proxy.drop_replies("POST", f"/api/flow_runs/{run_id}/input", exact=True)  # the create
            here.signal(run_id, "second", {"k": 2})
        signals = run_sync(count_signals(run_id))
        gate.touch()
        assert here.get_result("outage-signalled", run_id, timeout=120)["n"] == 1
    assert len(proxy.dropped) == 2 and signals == 2, (proxy.dropped, signals)
