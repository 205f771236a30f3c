"""A real `prefect server start` on a free loopback port, with its own temporary PREFECT_HOME.

For end-to-end tests that need what the in-process ephemeral API cannot give: several processes
(workers, a second client) talking to one API.

    >>> from prefect_beluga.testing.prefect_server import PrefectServer
    >>> with PrefectServer() as server:
    ...     server.api_url                      # 'http://127.0.0.1:<port>/api'
    ...     subprocess.run(["prefect", "worker", "start", "--pool", "p"], env=server.env)
    ...     with server.settings():             # this process's Prefect client talks to it too
    ...         ...

`env` is a full environment for subprocesses (this process's environment plus `PREFECT_API_URL`,
a client `PREFECT_HOME` and a shared `PREFECT_LOCAL_STORAGE_PATH`, so results one process
persists another can read). `settings()` applies the same to this process for a `with` block.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def prefect_executable() -> str:
    """The `prefect` CLI next to this interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("prefect")
    if beside.exists():
        return str(beside)
    found = shutil.which("prefect")
    if not found:
        raise RuntimeError("the `prefect` command is not installed next to this Python or on PATH")
    return found


class PrefectServer:
    """`prefect server start` in a subprocess, on loopback, for the length of a `with` block.

    Args:
        host: Interface to listen on (loopback by default).
        port: Port; a free one by default.
        startup_timeout: Seconds to wait for `/api/health` before giving up (the log is in the
            error).
        stop_timeout: Seconds to wait after SIGTERM before SIGKILL.
        ui: Serve the UI too (off by default: faster start).
        extra_env: More variables for the server process (and for `env`).
        keep_home: Keep the temporary PREFECT_HOME after stopping (for debugging).

    Attributes (once started):
        api_url: e.g. ``http://127.0.0.1:4242/api``.
        home: The server's PREFECT_HOME (database, log in ``server.log``).
        env: Environment for subprocesses that must talk to this server.

    Examples:
        Per test module, as a pytest fixture (see ``tests/conftest.py``):

        >>> @pytest.fixture(scope="module")
        ... def prefect_server():
        ...     with PrefectServer() as server:
        ...         yield server
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 90.0,
        stop_timeout: float = 15.0,
        ui: bool = False,
        extra_env: dict[str, str] | None = None,
        keep_home: bool = False,
    ) -> None:
        if startup_timeout <= 0 or stop_timeout <= 0:
            raise ValueError("startup_timeout and stop_timeout must be > 0 seconds")
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.ui = ui
        self.keep_home = keep_home
        self._extra_env = dict(extra_env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.home: Path | None = None
        self.api_url: str = ""
        self.env: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> PrefectServer:
        if self._process is not None:
            raise RuntimeError("this PrefectServer is already running")
        self.home = Path(tempfile.mkdtemp(prefix="prefect-beluga-server-"))
        port = self.port or free_port(self.host)
        self.api_url = f"http://{self.host}:{port}/api"
        server_env = _clean_env(os.environ)
        server_env.update(
            PREFECT_HOME=str(self.home / "server-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="true" if self.ui else "false",
            PREFECT_SERVER_API_HOST=self.host,
            PREFECT_SERVER_API_PORT=str(port),
            PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
            **self._extra_env,
        )
        self._log_file = open(self.home / "server.log", "wb")
        self._process = subprocess.Popen(
            [prefect_executable(), "server", "start", "--host", self.host, "--port", str(port)],
            env=server_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our signals reach the server and its children only
        )
        self.env = _clean_env(os.environ)
        self.env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home / "client-home"),
            PREFECT_LOCAL_STORAGE_PATH=str(self.home / "storage"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            **self._extra_env,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with code {self._process.returncode} before it was "
                    f"healthy:\n{self.log()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prefect server at {self.api_url} not healthy after {self.startup_timeout}s:\n"
                    f"{self.log()[-4000:]}"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM the server's process group, wait, SIGKILL it on timeout; remove its home."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(self.stop_timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.home is not None and not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """What the server has printed so far."""
        if self.home is None or not (self.home / "server.log").exists():
            return ""
        return (self.home / "server.log").read_text(errors="replace")

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Point this process's Prefect client at the server (and the shared result storage)."""
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_LOCAL_STORAGE_PATH,
            temporary_settings,
        )

        with temporary_settings(
            {
                PREFECT_API_URL: self.api_url,
                PREFECT_LOCAL_STORAGE_PATH: Path(self.env["PREFECT_LOCAL_STORAGE_PATH"]),
            }
        ):
            yield


def _clean_env(environ: Any) -> dict[str, str]:
    """`environ` without the Prefect settings a test session sets for its own ephemeral API."""
    drop = {
        "PREFECT_API_URL",
        "PREFECT_API_KEY",
        "PREFECT_HOME",
        "PREFECT_PROFILES_PATH",
        "PREFECT_LOCAL_STORAGE_PATH",
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    }
    return {k: v for k, v in environ.items() if k not in drop}


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


try:  # a fixture for pytest users; the module works without pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="module")
    def prefect_server() -> Iterator[PrefectServer]:
        """A real Prefect server on loopback, shared by one test module."""
        with PrefectServer() as server:
            yield server


__all__ = ["PrefectServer", "free_port", "prefect_executable"]
if pytest is not None:
    __all__ += ["prefect_server"]
