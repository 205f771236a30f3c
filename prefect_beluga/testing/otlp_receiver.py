"""A loopback OTLP/HTTP trace receiver: decodes the protobuf `ExportTraceServiceRequest` the
OpenTelemetry exporter really sends (needs `opentelemetry-proto`, in the `otel` extra).

    ```python
    with OTLPReceiver() as receiver:
        os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = receiver.traces_url
        ...  # export
        receiver.spans()  # [{"name", "trace_id", "span_id", "parent_span_id", "attributes", "scope"}, ...]
    ```
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind)


class OTLPReceiver:
    """Receives OTLP/HTTP protobuf trace exports on 127.0.0.1 and keeps the decoded spans.

    Args:
        host: Address to bind (loopback only).
        port: Port to bind; 0 picks a free one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._spans: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                )

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                receiver._add(body, request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def traces_url(self) -> str:
        """The traces endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`."""
        return f"{self.url}/v1/traces"

    def _add(self, body: bytes, request: Any) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append({
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "kind": span.kind,
                        "status_code": span.status.code,
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                        "scope": scope_spans.scope.name,
                        "resource": resource,
                    })
        with self._lock:
            self.bodies.append(body)
            self._spans.extend(spans)

    def spans(self) -> list[dict[str, Any]]:
        """Every span received so far, decoded."""
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> OTLPReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-loopback", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["OTLPReceiver"]
