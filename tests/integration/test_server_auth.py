"""A `prefect server` with basic auth (`PrefectServer(auth_string=...)`), as the operations docs'
secured recipe sets it up: the API lets no one in without the string, and everything the
package does — blocks, deployed workflows run by a process worker, `execute`/`get_result` from
another process — works through it with the client setting `PREFECT_API_AUTH_STRING`.

The server runs on PostgreSQL when it is installed (the recipe's database), else on SQLite.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from prefect_beluga.core._sync import run_sync
from prefect_beluga.testing.helpers import create_process_pool, eventually
from prefect_beluga.testing.prefect_server import (
    PrefectServer,
    postgres_bin_dir,
    prefect_executable,
    stop_process_group,
)

HERE = Path(__file__).resolve().parent
AUTH = f"beluga-admin:LEAKCANARY-{uuid.uuid4().hex}"
SECRET_PART = AUTH.split(":", 1)[1].encode()
NEEDLES = [AUTH.encode(), SECRET_PART, base64.b64encode(AUTH.encode()), base64.b64encode(SECRET_PART)]


@pytest.fixture(scope="module")
def auth_server() -> Iterator[PrefectServer]:
    database = "postgresql" if postgres_bin_dir() else "sqlite"
    with PrefectServer(database=database, auth_string=AUTH) as server:
        yield server


def call(server: PrefectServer, method: str, path: str, auth: str | None, body: object = None) -> int:
    """The HTTP status of one raw API call, with `auth` as the basic-auth string (or none)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.api_url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


ENDPOINTS = [
    ("POST", "/block_documents/filter", {"include_secrets": True}),
    ("POST", "/flow_runs/filter", {}),
    ("POST", "/deployments/filter", {}),
    ("POST", "/flow_runs/", {"flow_id": str(uuid.uuid4())}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_without_or_with_a_wrong_auth_string_the_api_answers_401(auth_server, method, path, body):
    assert call(auth_server, method, path, None, body) == 401
    assert call(auth_server, method, path, "beluga-admin:wrong", body) == 401
    assert call(auth_server, method, path, AUTH.split(":")[1], body) == 401  # the password alone
    if path.endswith("/filter"):
        assert call(auth_server, method, path, AUTH, body) == 200


def test_health_stays_open_and_the_client_side_is_in_env_and_settings_not_in_the_url(auth_server):
    with urllib.request.urlopen(f"{auth_server.api_url}/health", timeout=10) as reply:
        assert reply.read() == b"true"
    assert auth_server.env["PREFECT_API_AUTH_STRING"] == AUTH
    assert AUTH not in auth_server.api_url and SECRET_PART.decode() not in auth_server.env["PREFECT_API_URL"]
    assert "LEAKCANARY" not in repr(auth_server)
    with auth_server.settings():
        from prefect.settings import PREFECT_API_AUTH_STRING

        assert PREFECT_API_AUTH_STRING.value() == AUTH

        async def healthy_and_listed() -> int:
            async with get_client() as client:
                assert await client.api_healthcheck() is None
                return len(await client.read_flow_runs(limit=1))

        assert run_sync(healthy_and_listed()) >= 0


def test_a_prefect_client_without_the_string_is_refused(auth_server):
    code = textwrap.dedent("""
        import asyncio
        from prefect.client.orchestration import get_client
        async def main():
            async with get_client() as client:
                await client.read_deployments()
        try:
            asyncio.run(main())
        except Exception as exc:
            print("REFUSED", getattr(getattr(exc, "response", None), "status_code", type(exc).__name__))
        else:
            print("ALLOWED")
    """)
    env = {k: v for k, v in auth_server.env.items() if k != "PREFECT_API_AUTH_STRING"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "REFUSED 401" in done.stdout, done.stdout + done.stderr


def _child_env(server: PrefectServer, worker: str) -> dict[str, str]:
    env = dict(server.env)
    env.update(
        BELUGA_TEST_WORKER=worker,
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
        PREFECT_LOGGING_LEVEL="DEBUG",  # the most a log could say: it must still not hold the string
    )
    return env


async def _everything_through_the_api() -> str:
    async with get_client() as client:
        parts = [
            await client.read_flow_runs(limit=200),
            await client.read_task_runs(limit=200),
            await client.read_logs(limit=200),
            await client.read_artifacts(limit=200),
            await client.read_deployments(limit=200),
            await client.read_block_documents(include_secrets=False),
        ]
    return json.dumps([[item.model_dump(mode="json") for item in part] for part in parts])


def _leaks(data: bytes | str, where: str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    return [f"{where}: {needle[:16]!r}" for needle in NEEDLES if needle in raw]


EXECUTE = """
import workflow_fixtures as fx
from prefect_beluga import Orchestrator
caller = Orchestrator().create_workflow(fx.add_slowly, workflow_id="test-spread", distributed=True)
print(*caller.execute({"a": 2, "b": 40}))
"""


def test_a_process_worker_and_another_process_run_workflows_through_auth(auth_server, tmp_path):
    """A deployment run by a process worker, executed from one process and awaited from another
    (this one); then the auth string is in no log, parameter, artifact, result or file."""
    import workflow_fixtures as fx

    pool = "beluga-auth-pool"
    with auth_server.settings():
        run_sync(create_process_pool(pool))
        assert fx.spread.deploy(work_pool=pool)
        worker_log = open(tmp_path / "worker.log", "wb")
        worker = subprocess.Popen(
            [prefect_executable(), "worker", "start", "--pool", pool, "--name", "auth-worker", "--type", "process"],
            env=_child_env(auth_server, "auth-worker"), stdout=worker_log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            executor = subprocess.run(
                [sys.executable, "-c", EXECUTE],
                env=_child_env(auth_server, "executor"), capture_output=True, text=True, timeout=120,
            )
            assert executor.returncode == 0, executor.stderr[-3000:]
            workflow_id, run_id = executor.stdout.split()[-2:]
            result = fx.spread.get_result(workflow_id, run_id, timeout=180)
        finally:
            stop_process_group(worker)
            worker_log.close()
        assert result["sum"] == 42 and result["worker"] == "auth-worker", (tmp_path / "worker.log").read_text()[-3000:]
        api = run_sync(_everything_through_the_api())

    hits = _leaks(api, "API (runs, logs, artifacts, deployments, blocks)")
    hits += _leaks(executor.stdout + executor.stderr, "executor output")
    hits += _leaks(repr(result), "result")
    for root in (tmp_path, auth_server.home):
        for path in (p for p in root.rglob("*") if p.is_file()):
            hits += _leaks(path.read_bytes(), str(path))
    assert hits == []
    assert (tmp_path / "worker.log").stat().st_size > 0  # the worker did log (at DEBUG)


def test_a_served_workflow_answers_execute_from_this_process(auth_server, tmp_path):
    import workflow_fixtures as fx

    from prefect_beluga import Orchestrator, WorkflowNotDeployed

    log = open(tmp_path / "serve.log", "wb")
    served = subprocess.Popen(
        [sys.executable, "-c", "import workflow_fixtures as fx; fx.adder.serve()"],
        env=_child_env(auth_server, "served"), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        cwd=tmp_path,
    )
    caller = Orchestrator().create_workflow(fx.add, workflow_id="test-adder", distributed=True)
    try:
        with auth_server.settings():

            def executed() -> tuple[str, str] | None:
                try:
                    return caller.execute({"a": 1, "b": 2})
                except WorkflowNotDeployed:
                    if served.poll() is not None:  # it died: fail now, with its log
                        pytest.fail((tmp_path / "serve.log").read_text(errors="replace")[-3000:])
                    return None

            workflow_id, run_id = eventually(executed, "the served deployment to appear", timeout=120, interval=1)
            result = caller.get_result(workflow_id, run_id, timeout=120)
    finally:
        stop_process_group(served)
        log.close()
    assert result["sum"] == 3 and result["worker"] == "served"
    assert _leaks((tmp_path / "serve.log").read_bytes(), "serve.log") == []


def test_test_servers_listen_on_loopback_by_default():
    from prefect_beluga.testing import OpenAIServer, PineconeServer

    assert PrefectServer().host == "127.0.0.1"
    with OpenAIServer() as openai, PineconeServer() as pinecone:
        assert openai.base_url.startswith("http://127.0.0.1:") and pinecone.url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="loopback"):
        OpenAIServer(host="0.0.0.0")


def test_prefect_server_options_are_checked_up_front():
    with pytest.raises(ValueError, match="database='mysql'"):
        PrefectServer(database="mysql")
    with pytest.raises(ValueError, match="auth_string"):
        PrefectServer(auth_string="")
    from pydantic import SecretStr

    assert PrefectServer(auth_string=SecretStr("a:b")).auth_string == "a:b"
