"""The outage counterparts the fault tests use: a `PrefectServer` killed and restarted on the same
port, home and database, and a `ThrowawayPostgres` stopped (``pg_ctl -m fast stop``) and started
again with its data."""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from prefect_beluga import Orchestrator
from prefect_beluga.core._sync import run_sync
from prefect_beluga.testing.prefect_server import PrefectServer, ThrowawayPostgres, postgres_bin_dir

needs_postgres = pytest.mark.skipif(postgres_bin_dir() is None, reason="PostgreSQL is not installed")


def healthy(server: PrefectServer) -> bool:
    try:
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def read_flow_id(name: str) -> str:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return str((await client.read_flow_by_name(name)).id)


def test_a_killed_server_restarts_on_its_port_with_its_database():
    """On SQLite, SIGKILL and SIGTERM: the same API comes back, and a workflow's `status` and
    `get_result` issued while it was down return once it is back (the PostgreSQL-backed client
    tests are in test_client_outages.py)."""
    workflow = Orchestrator().create_workflow(lambda state: {"got": state["n"]}, workflow_id="outage-counterparts")
    with PrefectServer() as server, server.settings(), ThreadPoolExecutor(2) as pool:
        url, home = server.api_url, server.home
        wid, run_id = workflow.execute({"n": 7})
        assert workflow.get_result(wid, run_id, timeout=60) == {"got": 7}
        flow_id = run_sync(read_flow_id("outage-counterparts"))
        for sig in (signal.SIGKILL, signal.SIGTERM):
            pid = server._process.pid
            server.kill(sig)
            assert not server.running and not healthy(server)
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)  # the whole group is gone: no uvicorn child left behind
            context = contextvars.copy_context()  # the settings pointing at this server
            waiting = [pool.submit(context.copy().run, workflow.status, run_id),
                       pool.submit(context.copy().run, workflow.get_result, wid, run_id, timeout=120)]
            time.sleep(3)
            assert not any(f.done() for f in waiting), [f.exception() for f in waiting if f.done()]
            server.restart()
            assert server.running and healthy(server)
            assert (server.api_url, server.home) == (url, home)
            assert run_sync(read_flow_id("outage-counterparts")) == flow_id
            assert [f.result(timeout=120) for f in waiting] == ["COMPLETED", {"got": 7}]
        with pytest.raises(RuntimeError, match="not running"):
            server.kill()
            server.kill()
    assert not home.exists()


@needs_postgres
def test_throwaway_postgres_stops_and_starts_again_with_its_data():
    def psql(pg: ThrowawayPostgres, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(postgres_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user,
             "-d", pg.database, "-tA", "-c", sql],
            env={**os.environ, "PGPASSWORD": pg._password}, capture_output=True, text=True, timeout=30,
        )

    with ThrowawayPostgres() as pg:
        url, root = pg.url, pg.root
        assert psql(pg, "CREATE TABLE t (v int); INSERT INTO t VALUES (42);").returncode == 0
        pg.stop_server()
        assert not pg.running
        refused = psql(pg, "SELECT v FROM t")
        assert refused.returncode != 0
        assert pg._password not in repr(pg) and pg._password not in refused.stderr
        pg.start_server()
        assert pg.running and pg.url == url
        assert psql(pg, "SELECT v FROM t").stdout.strip() == "42"
        with pytest.raises(RuntimeError, match="already running"):
            pg.start_server()
    assert not root.exists()
