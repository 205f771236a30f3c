"""MCP test helpers: a relay that counts what a stdio server is asked, and an HTTP server of our own.

A stdio MCP server from the package index is run unchanged behind `relayed(...)`, a small relay
process that passes the client's messages through to it and writes down each request's method
(and the server's pid), so a test counts `initialize` / `tools/list` per run and checks that
the process is gone afterwards, with nothing patched:

    ```python
    import sys

    from prefect_beluga.mcp import MCPServer
    from prefect_beluga.testing.mcp import MCPTraffic

    traffic = MCPTraffic("time.log")
    server = MCPServer(**traffic.relayed(sys.executable, "-m", "mcp_server_time"))
    # an agent run with tools=[server] here, and then traffic.count("tools/list") == 1
    assert traffic.count("tools/list") == 0
    assert traffic.alive() == []   # pids of the relay and the server still running
    ```

`HTTPMCPServer` runs an `mcp.server.mcpserver.MCPServer` (the SDK's FastMCP) of the test's own
over streamable HTTP on 127.0.0.1 (uvicorn in a thread) and records each JSON-RPC method and the
`Authorization` header it was sent with.

`python prefect_beluga/testing/mcp.py LOG -- COMMAND ARGS...` is the relay itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Handshake methods: `initialize` (the 2025 protocol) or `server/discover` (2026-07-28).
HANDSHAKES = ("initialize", "server/discover")


class MCPTraffic:
    """What a relayed stdio server was asked, read from the relay's log file."""

    def __init__(self, log: str | os.PathLike[str]) -> None:
        self.log = Path(log)

    def relayed(self, command: str, *args: str) -> dict[str, Any]:
        """`MCPServer(**traffic.relayed(...))`'s `command` and `args`: the server behind the relay."""
        # this file run as a script: it imports only the standard library, so the relay starts fast
        return {"command": sys.executable, "args": [__file__, str(self.log), "--", command, *args]}

    def lines(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        return [tuple(line.split(" ", 1)) for line in self.log.read_text().splitlines() if " " in line]  # type: ignore[misc]

    def methods(self) -> list[str]:
        """The methods of the requests and notifications the client sent, in order."""
        return [value for kind, value in self.lines() if kind == "method"]

    def count(self, method: str) -> int:
        return self.methods().count(method)

    def handshakes(self) -> int:
        """Sessions opened: `initialize` or `server/discover` requests."""
        return sum(self.count(method) for method in HANDSHAKES)

    def pids(self) -> list[int]:
        """The relay's and the server's process ids, of every session so far."""
        return [int(value) for kind, value in self.lines() if kind in ("relay", "server")]

    def alive(self, wait: float = 5.0) -> list[int]:
        """Those of `pids()` still running after up to `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            running = [pid for pid in self.pids() if _running(pid)]
            if not running or time.monotonic() > deadline:
                return running
            time.sleep(0.05)

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except (FileNotFoundError, IndexError):
        return False


class HTTPMCPServer:
    """An SDK `MCPServer` (FastMCP) over streamable HTTP on 127.0.0.1, recording requests.

    Args:
        server: The `mcp.server.mcpserver.MCPServer` with the test's tools.
        token: When set, requests without `Authorization: Bearer <token>` get 401.
    """

    def __init__(self, server: Any, *, token: str | None = None) -> None:
        self.server = server
        self.token = token
        self.requests: list[dict[str, Any]] = []  # {"method", "authorization"} per JSON-RPC message
        self._lock = threading.Lock()
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None
        self.port = _free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def methods(self) -> list[str]:
        with self._lock:
            return [r["method"] for r in self.requests]

    def count(self, method: str) -> int:
        return self.methods().count(method)

    def handshakes(self) -> int:
        return sum(self.count(method) for method in HANDSHAKES)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def __enter__(self) -> HTTPMCPServer:
        import uvicorn

        app = _Recorder(self.server.streamable_http_app(), self)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, name="mcp-http-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


class _Recorder:
    """ASGI middleware: note each POSTed JSON-RPC message's method (and the bearer check)."""

    def __init__(self, app: Any, owner: HTTPMCPServer) -> None:
        self.app, self.owner = app, owner

    async def __call__(self, scope: Any, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        authorization = headers.get(b"authorization", b"").decode()
        if self.owner.token is not None and authorization != f"Bearer {self.owner.token}":
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        if scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        for item in parsed if isinstance(parsed, list) else [parsed]:
            if isinstance(item, dict) and "method" in item:
                with self.owner._lock:
                    self.owner.requests.append({"method": item["method"], "authorization": authorization})
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _relay(argv: list[str]) -> int:
    """The relay: our stdin to the server's, line by line, noting each method; its stdout is ours."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python mcp.py LOG -- COMMAND ARGS...", file=sys.stderr)
        return 2
    log_path, command = argv[0], argv[2:]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=None, stderr=None)
    assert child.stdin is not None
    with open(log_path, "a", buffering=1) as log:
        log.write(f"relay {os.getpid()}\nserver {child.pid}\n")
        for line in sys.stdin.buffer:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            for item in message if isinstance(message, list) else [message]:
                if isinstance(item, dict) and "method" in item:
                    log.write(f"method {item['method']}\n")
            try:
                child.stdin.write(line)
                child.stdin.flush()
            except BrokenPipeError:
                break
    try:
        child.stdin.close()
    except BrokenPipeError:
        pass
    # No kill here: a server that does not exit when its stdin closes stays running, so a test's
    # `alive()` sees it (and this relay waiting for it).
    return child.wait()


if __name__ == "__main__":
    sys.exit(_relay(sys.argv[1:]))


__all__ = ["HANDSHAKES", "HTTPMCPServer", "MCPTraffic"]
