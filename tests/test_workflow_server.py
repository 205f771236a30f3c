"""The real-server test helper: `PrefectServer` starts, answers, and stops cleanly."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from prefect_beluga.testing.prefect_server import PrefectServer


def test_prefect_server_is_healthy_and_reachable_from_a_subprocess(prefect_server: PrefectServer):
    with urllib.request.urlopen(f"{prefect_server.api_url}/health", timeout=5) as reply:
        assert reply.read() == b"true"
    code = (
        "import asyncio\n"
        "from prefect.client.orchestration import get_client\n"
        "async def main():\n"
        "    async with get_client() as client:\n"
        "        print(client.api_url)\n"
        "        print(await client.api_healthcheck())\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=prefect_server.env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert prefect_server.api_url in out.stdout
    assert "None" in out.stdout  # api_healthcheck returns None when healthy


def test_prefect_server_rejects_bad_timeouts():
    with pytest.raises(ValueError, match="startup_timeout"):
        PrefectServer(startup_timeout=0)
