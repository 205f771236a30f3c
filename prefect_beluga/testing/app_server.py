"""`python -m prefect_beluga.server` in a subprocess on a free loopback port, for tests and benchmarks.

    ```python
    from prefect_beluga.testing.app_server import AppServer
    with PrefectServer() as api, AppServer(["my_fixtures:workflow"], env=api.env, token="t0ken-123") as app:
        httpx.post(f"{app.url}/runs", json={...}, headers=app.headers)
    ```

The token goes to the app through its environment (`BELUGA_APP_TOKEN`), never its command line;
`log()` is everything the app printed (uvicorn's access log included), to check for secrets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prefect_beluga.testing._processes import free_port, stop_process_group


class AppServer:
    """The app serving `workflows` (``module:attr`` specs) in a subprocess, for a `with` block.

    Args:
        workflows: What `--workflow` gets, one per spec.
        env: The app's environment (e.g. `PrefectServer.env`, plus what the workflows read).
        token: The bearer token (None: no auth).
        port: The port (a free one by default).
        startup_timeout: Seconds to wait for `/health`.
        pythonpath: Directories put first on the app's `PYTHONPATH` (where the workflows' modules are).
        args: More command-line arguments (e.g. ``["--input-model", "wf=module:Model"]``).
    """

    def __init__(
        self,
        workflows: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        token: str | None = None,
        port: int | None = None,
        startup_timeout: float = 60.0,
        pythonpath: Sequence[str] = (),
        args: Sequence[str] = (),
    ) -> None:
        self.workflows = list(workflows)
        self.env = dict(os.environ if env is None else env)
        self.env.pop("BELUGA_APP_TOKEN", None)
        if token is not None:
            self.env["BELUGA_APP_TOKEN"] = token
        if pythonpath:
            self.env["PYTHONPATH"] = os.pathsep.join([*pythonpath, self.env.get("PYTHONPATH", "")])
        self._token = token
        self.args = list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = Path(tempfile.mkdtemp(prefix="beluga-app-")) / "app.log"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def start(self) -> AppServer:
        args = [sys.executable, "-m", "prefect_beluga.server", "--port", str(self.port), "--log-level", "info"]
        for spec in self.workflows:
            args += ["--workflow", spec]
        args += self.args
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the app exited with {self._process.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the app was not healthy after {self.startup_timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            stop_process_group(self._process)
            self._process = None

    def kill(self) -> None:
        """SIGKILL the app (a replica lost)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # never the token
        return f"AppServer({self.url!r}, workflows={self.workflows!r})"


__all__ = ["AppServer"]
