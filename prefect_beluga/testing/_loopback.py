"""What the loopback test servers share: recorded requests, scripted faults, the HTTP plumbing."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from typing_extensions import Self


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # the parsed JSON body, or None
    raw: bytes = b""
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic())
    query: str = ""  # the URL's query string, e.g. "api-version=2024-10-21"

    @property
    def bearer(self) -> str | None:
        """The bearer token sent, if any."""
        value = self.headers.get("authorization", "")
        return value[7:] if value.lower().startswith("bearer ") else None


@dataclass
class Fault:
    """One scripted misbehaviour (see `OpenAIServer.fail_next` and friends)."""

    kind: str  # "status", "slow", "drop", "malformed"
    status: int = 500
    retry_after: float | str | None = None
    retry_after_ms: float | None = None
    delay: float = 0.0
    body: Any = None
    path: str | None = None


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server whose listen backlog takes a burst of concurrent connections.

    socketserver's default backlog is 5: when a client opens more connections at once than the
    accept thread takes in time, the kernel drops the rest and TCP retries them a second later.
    """

    request_queue_size = 128
    daemon_threads = True
    block_on_close = False


class LoopbackServer:
    """What the loopback servers share: a threaded HTTP server on a loopback port, the requests
    it received, a queue of scripted faults, and `latency` as every request's response time.

    Subclasses set `handler` (their request handler class; it reaches the server as
    `self.server_state`) and `thread_name`.
    """

    handler: type[BaseHTTPRequestHandler]
    thread_name = "loopback"

    def __init__(self, *, latency: float, host: str, port: int) -> None:
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError(f"{type(self).__name__} binds loopback addresses only, got host={host!r}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")
        self.latency = latency
        self._host = host
        self._port = port
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._in_flight = 0
        self.max_in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread. Returns the server."""
        if self._httpd is not None:
            return self
        handler = type("_Handler", (self.handler,), {"server_state": self})
        httpd = LoopbackHTTPServer((self._host, self._port), handler)
        self._httpd = httpd
        self._stopping.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (slow replies in progress are cut short)."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running: call start() or use it as a context manager")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://{self._host}:{self.port}"

    # -- scripting -------------------------------------------------------------------------------

    def slow_next(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Wait `seconds` before answering the next `times` requests (normally)."""
        self._queue(Fault("slow", delay=seconds, path=path), times)

    def _queue(self, fault: Fault, times: int) -> None:
        if not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an int >= 1, got {times!r}")
        with self._lock:
            self._faults.extend(Fault(**vars(fault)) for _ in range(times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # -- inspection ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy). `headers` names are lower-cased."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The requests received for `path`, whatever their outcome."""
        return [r for r in self.requests if r.path == path]

    # -- called by the handler -------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            self._requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            for index, fault in enumerate(self._faults):
                if fault.path is None or fault.path == request.path:
                    del self._faults[index]
                    return fault
            return None

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class LoopbackHandler(BaseHTTPRequestHandler):
    """The request handler both servers build on: keep-alive, quiet, and `latency` kept.

    It reads and records each request (a body that is not JSON is recorded as None), starts
    its latency clock and hands it, with the scripted fault it drew, to `_respond(request,
    fault)`, which subclasses implement, calling `_hold()` before the first byte of the reply.
    """

    server_state: LoopbackServer
    protocol_version = "HTTP/1.1"
    _answer_at = 0.0  # when the current request may be answered (monotonic clock)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        state = self.server_state
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        url = urlsplit(self.path)
        request = RecordedRequest(method, url.path, headers, body, raw, query=url.query)
        fault = state._record(request)
        try:
            # `latency` is the response time: the reply's own work happens within it.
            self._answer_at = time.monotonic() + state.latency
            self._respond(request, fault)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            state._done()

    def _respond(self, request: RecordedRequest, fault: Fault | None) -> None:
        raise NotImplementedError

    def _hold(self) -> None:
        """Wait until the request's latency has passed since it arrived."""
        self.server_state._wait(self._answer_at - time.monotonic())


__all__ = ["Fault", "LoopbackHTTPServer", "LoopbackHandler", "LoopbackServer", "RecordedRequest"]
