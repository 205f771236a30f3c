"""A real `prefect server start` on a free loopback port, with its own temporary PREFECT_HOME.

For end-to-end tests that need what the in-process ephemeral API cannot give: several processes
(workers, a second client) talking to one API. The server listens on 127.0.0.1 only unless told
otherwise; its database is SQLite in its home by default, or a throwaway PostgreSQL
(``database="postgresql"``, see `ThrowawayPostgres`); ``auth_string=`` turns on Prefect's basic
auth (the server refuses every API call without it; ``/api/health`` stays open).

    ```python
    from prefect_beluga.testing.prefect_server import PrefectServer
    with PrefectServer() as server:
        server.api_url                      # 'http://127.0.0.1:<port>/api'
        subprocess.run(["prefect", "worker", "start", "--pool", "p"], env=server.env)
        with server.settings():             # this process's Prefect client talks to it too
            ...
    ```

    ```python
    with PrefectServer(database="postgresql", auth_string="admin:s3cret") as server:
        server.env["PREFECT_API_AUTH_STRING"]   # clients send it; the URL never holds it
    ```

For fault tests, `kill()` takes the server down (SIGKILL by default: a crash) keeping its home,
port and database, and `restart()` starts it again on them; with ``database="postgresql"``,
``server.postgres.stop_server()`` / ``start_server()`` make a database outage under it.

`env` is a full environment for subprocesses (this process's environment plus `PREFECT_API_URL`,
`PREFECT_API_AUTH_STRING` when the server has one, a client `PREFECT_HOME` and a shared
`PREFECT_LOCAL_STORAGE_PATH`, so results one process persists another can read). `settings()`
applies the same to this process for a `with` block.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect_beluga.testing._postgres import DATABASES, ThrowawayPostgres, postgres_bin_dir
from prefect_beluga.testing._processes import free_port, signal_group, stop_process_group


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
        database: ``"sqlite"`` (default: a file in the server's home) or ``"postgresql"`` (a
            `ThrowawayPostgres` started first and removed after the server stops).
        auth_string: Turn on Prefect's basic auth: the server gets
            ``PREFECT_SERVER_API_AUTH_STRING`` and refuses API calls without it (401);
            ``/api/health`` stays open. `env` and `settings()` carry the client side
            (``PREFECT_API_AUTH_STRING``); the URL never holds it. A str or a pydantic `SecretStr`.
        host: Interface to listen on (127.0.0.1, loopback only, by default).
        port: Port; a free one by default.
        startup_timeout: Seconds to wait for `/api/health` before giving up (the log is in the
            error).
        stop_timeout: Seconds to wait after SIGTERM before SIGKILL.
        ui: Serve the UI too (off by default: faster start).
        extra_env: More variables for the server process (and for `env`).
        keep_home: Keep the temporary PREFECT_HOME after stopping (for debugging).

    Attributes (once started):
        api_url: e.g. ``http://127.0.0.1:4242/api`` (never credentials).
        postgres: The `ThrowawayPostgres` when ``database="postgresql"``.
        home: The server's PREFECT_HOME (database, log in ``server.log``).
        env: Environment for subprocesses that must talk to this server.

    Examples:
        Per test module, as a pytest fixture (see ``tests/conftest.py``):

        ```python
        @pytest.fixture(scope="module")
        def prefect_server():
            with PrefectServer() as server:
                yield server
        ```

        Outages, for fault tests (`kill`, `restart`; the database under it via `postgres`):

        ```python
        with PrefectServer(database="postgresql") as server:
            server.kill()                       # SIGKILL: a crash
            server.restart()                    # same URL, home and database
            server.postgres.stop_server()       # pg_ctl -m fast stop
            server.postgres.start_server()
        ```
    """

    def __init__(
        self,
        *,
        database: str = "sqlite",
        auth_string: Any = None,
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
        if database not in DATABASES:
            raise ValueError(f"PrefectServer(database={database!r}): expected one of {', '.join(DATABASES)}")
        if auth_string is not None and hasattr(auth_string, "get_secret_value"):
            auth_string = auth_string.get_secret_value()
        if auth_string is not None and (not isinstance(auth_string, str) or not auth_string):
            raise ValueError("PrefectServer(auth_string=...): expected a non-empty str such as 'user:password'")
        self.database = database
        self._auth_string: str | None = auth_string
        self.postgres: ThrowawayPostgres | None = None
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.ui = ui
        self.keep_home = keep_home
        self._extra_env = dict(extra_env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._server_env: dict[str, str] = {}
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
        self.port = port
        self.api_url = f"http://{self.host}:{port}/api"
        try:
            self._start_server(port)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self, port: int) -> None:
        assert self.home is not None
        database: dict[str, str] = {}
        if self.database == "postgresql":
            self.postgres = ThrowawayPostgres().start()
            database["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.postgres.url
        auth_server = {"PREFECT_SERVER_API_AUTH_STRING": self._auth_string} if self._auth_string else {}
        auth_client = {"PREFECT_API_AUTH_STRING": self._auth_string} if self._auth_string else {}
        server_env = _clean_env(os.environ)
        server_env.update(
            PREFECT_HOME=str(self.home / "server-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="true" if self.ui else "false",
            PREFECT_SERVER_API_HOST=self.host,
            PREFECT_SERVER_API_PORT=str(port),
            PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
            **database,
            **auth_server,
            **self._extra_env,
        )
        self._server_env = server_env
        self.env = _clean_env(os.environ)
        self.env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home / "client-home"),
            PREFECT_LOCAL_STORAGE_PATH=str(self.home / "storage"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            **auth_client,
            **self._extra_env,
        )
        self._launch()

    def _launch(self) -> None:
        """Start `prefect server start` (its output appended to ``server.log``) and wait healthy."""
        assert self.home is not None and self.port is not None
        if self._log_file is None:
            self._log_file = open(self.home / "server.log", "ab")
        self._process = subprocess.Popen(
            [prefect_executable(), "server", "start", "--host", self.host, "--port", str(self.port)],
            env=self._server_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our signals reach the server and its children only
        )
        self._wait_healthy()

    def kill(self, sig: int = signal.SIGKILL, timeout: float | None = None) -> None:
        """Take the server down as a crash (SIGKILL, default) or an operator (SIGTERM) would:
        signal its process group and wait until every process of it has exited.

        Its home, port, database (the SQLite file, or the `ThrowawayPostgres`, which keeps
        running) and `env` stay, so `restart()` brings the same API back at the same URL.

        Args:
            sig: The signal (``signal.SIGKILL``, ``signal.SIGTERM``, ...).
            timeout: Seconds to wait for the group to exit (default `stop_timeout`); after that
                it is SIGKILLed.

        Examples:
            ```python
            server.kill()                    # clients now get connection errors
            time.sleep(20)
            server.restart()                 # same URL, same runs
            ```
        """
        process = self._process
        if process is None:
            raise RuntimeError("this PrefectServer is not running")
        wait = self.stop_timeout if timeout is None else timeout
        signal_group(process, sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait(wait)
        _wait_group_gone(process.pid, wait)
        self._process = None

    def restart(self) -> PrefectServer:
        """Start the server again on the same port, home and database, and wait until healthy.

        A server still running is first stopped with SIGTERM (`kill(signal.SIGTERM)`); after
        `kill()` it is started at once. Runs, deployments and results made before are all there.
        """
        if self.home is None:
            raise RuntimeError("this PrefectServer was never started (or was stopped and removed)")
        if self.running:
            self.kill(signal.SIGTERM)
        self._process = None
        self._launch()
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
            signal_group(process, signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.wait(self.stop_timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.home is not None and not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def auth_string(self) -> str | None:
        """The basic-auth string clients must send (``None``: no auth)."""
        return self._auth_string

    def __repr__(self) -> str:  # never the auth string or the database password
        return (f"PrefectServer(api_url={self.api_url!r}, database={self.database!r}, "
                f"auth={'on' if self._auth_string else 'off'})")

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
            PREFECT_API_AUTH_STRING,
            PREFECT_API_URL,
            PREFECT_LOCAL_STORAGE_PATH,
            temporary_settings,
        )

        _flush_events()  # events of runs so far belong to the API they ran on
        try:
            with temporary_settings(
                {
                    PREFECT_API_URL: self.api_url,
                    PREFECT_API_AUTH_STRING: self._auth_string,
                    PREFECT_LOCAL_STORAGE_PATH: Path(self.env["PREFECT_LOCAL_STORAGE_PATH"]),
                }
            ):
                yield
        finally:
            _flush_events()


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until no process is left in the process group `pgid` (children reparented after
    their parent died are reaped by init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # pragma: no cover - a reused group id of another user
            return
        time.sleep(0.05)


def _flush_events(timeout: float = 30.0) -> None:
    """Send the events queued so far and stop Prefect's events worker, so the next event starts
    a worker on the API of the settings current then.

    Prefect keeps one events worker per process whatever the API URL (its log worker is per URL),
    so without this, task runs of flows run under `settings()` would be recorded by the API the
    process talked to first, and events after `settings()` would go to a stopped server. Drained
    from a fresh thread: `drain_all` returns an awaitable when a loop is running.
    """
    from prefect.events.worker import EventsWorker

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="beluga-events-flush") as pool:
        pool.submit(EventsWorker.drain_all, timeout).result()


def _clean_env(environ: Any) -> dict[str, str]:
    """`environ` without the Prefect settings a test session sets for its own ephemeral API."""
    drop = {
        "PREFECT_API_URL",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_HOME",
        "PREFECT_PROFILES_PATH",
        "PREFECT_LOCAL_STORAGE_PATH",
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    }
    return {k: v for k, v in environ.items() if k not in drop}


__all__ = [
    "PrefectServer",
    "ThrowawayPostgres",
    "free_port",
    "postgres_bin_dir",
    "prefect_executable",
    "stop_process_group",
]
