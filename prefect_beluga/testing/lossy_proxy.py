"""A loopback HTTP proxy that loses replies: the fault where a request did reach the API and took
effect, but its reply never came back (a connection cut, a server killed between commit and
reply). Clients then retry a request that already succeeded — what idempotency must survive.

    ```python
    from prefect.settings import PREFECT_API_URL

    from prefect_beluga.testing.lossy_proxy import LossyProxy

    with LossyProxy(PREFECT_API_URL.value()) as proxy:
        proxy.drop_replies("POST", "/api/flow_runs/", times=2)
        # point clients at proxy.api_url: the next two run creations happen, their replies are lost
    ```

Everything else passes through unchanged, websockets (Prefect's event streams) included.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prefect_beluga.testing._processes import free_port

__all__ = ["LossyProxy"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length"}


class LossyProxy:
    """A proxy on 127.0.0.1 in front of `upstream` that drops the replies you ask it to.

    Args:
        upstream: The API's URL, e.g. ``http://127.0.0.1:4200/api`` (its path is kept: the proxy
            forwards ``/api/...`` to ``/api/...``).
        port: Port to listen on; a free one by default.

    Attributes:
        api_url: The proxy's URL with the upstream's path (what clients use instead).
        dropped: ``(method, path, upstream status)`` of each reply it dropped.

    Examples:
        ```python
        from prefect.settings import PREFECT_API_URL

        from prefect_beluga.testing.lossy_proxy import LossyProxy

        with LossyProxy(PREFECT_API_URL.value()) as proxy:
            proxy.drop_replies("POST", "/api/flow_runs/")
            assert proxy.dropped == []  # a run created through proxy.api_url: [("POST", "/api/flow_runs/", 201)]
        ```
    """

    def __init__(self, upstream: str, *, port: int | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"LossyProxy: expected an http:// upstream URL, got {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self.port = port or free_port()
        self.api_url = f"http://127.0.0.1:{self.port}{parts.path.rstrip('/')}"
        self.dropped: list[tuple[str, str, int]] = []
        self._drops: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def drop_replies(self, method: str, path_prefix: str, *, times: int = 1, exact: bool = False) -> None:
        """Lose the reply of the next `times` requests of `method` whose path starts with
        `path_prefix` (is it, with `exact`): each is forwarded and answered upstream, then the
        client's connection is closed without a byte of the reply."""
        with self._lock:
            self._drops += [(method.upper(), path_prefix, exact)] * times

    def _take_drop(self, method: str, path: str) -> bool:
        with self._lock:
            for i, (m, prefix, exact) in enumerate(self._drops):
                if m == method and (path.split("?")[0] == prefix if exact else path.startswith(prefix)):
                    del self._drops[i]
                    return True
        return False

    def start(self) -> LossyProxy:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="lossy-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LossyProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LossyProxy(api_url={self.api_url!r}, dropped={len(self.dropped)})"


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: LossyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._tunnel()
        else:
            self._forward()

    def _forward(self) -> None:
        owner = self.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = f"{owner.upstream_host}:{owner.upstream_port}"
        upstream = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            reply = upstream.getresponse()
            content = reply.read()
        except OSError:
            self._cut()
            return
        finally:
            upstream.close()
        if owner._take_drop(self.command, self.path):
            with owner._lock:
                owner.dropped.append((self.command, self.path, reply.status))
            self._cut()
            return
        self.send_response_only(reply.status, reply.reason)
        for key, value in reply.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

    def _cut(self) -> None:
        """Close the client's connection without a reply."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _tunnel(self) -> None:
        """Pass a websocket through byte for byte, both ways, until either side closes."""
        owner = self.owner
        self.close_connection = True
        try:
            upstream = socket.create_connection((owner.upstream_host, owner.upstream_port), timeout=10)
        except OSError:
            self._cut()
            return
        upstream.settimeout(None)
        head = f"{self.requestline}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in self.headers.items() if k.lower() != "host"
        ) + f"Host: {owner.upstream_host}:{owner.upstream_port}\r\n\r\n"
        upstream.sendall(head.encode("latin-1"))

        def pipe(source: socket.socket, target: socket.socket) -> None:
            try:
                while chunk := source.recv(65536):
                    target.sendall(chunk)
            except OSError:
                pass
            finally:
                for sock in (source, target):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pipe, args=(upstream, self.connection), daemon=True)
        back.start()
        pipe(self.connection, upstream)
        back.join(timeout=5)
        upstream.close()
