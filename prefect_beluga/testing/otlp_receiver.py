"""A loopback OTLP/HTTP receiver: decodes the protobuf `ExportTraceServiceRequest` and
`ExportMetricsServiceRequest` the OpenTelemetry exporters really send (needs
`opentelemetry-proto`, in the `otel` extra).

    ```python
    from prefect_beluga.testing.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as receiver:
        # export to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.traces_url (and METRICS=receiver.metrics_url)
        assert receiver.spans() == []    # [{"name", "trace_id", "span_id", "parent_span_id", "attributes", ...}]
        assert receiver.metrics() == []  # [{"name", "unit", "type", "scope", "resource", "points": [...]}, ...]
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
    """Receives OTLP/HTTP protobuf trace and metric exports on 127.0.0.1 and keeps them decoded.

    Args:
        host: Address to bind (loopback only).
        port: Port to bind; 0 picks a free one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._spans: list[dict[str, Any]] = []
        self._metrics: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
                from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver._add(body, trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver._add_metrics(body, metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
                    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
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

    @property
    def metrics_url(self) -> str:
        """The metrics endpoint: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`."""
        return f"{self.url}/v1/metrics"

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

    def _add_metrics(self, body: bytes, request: Any) -> None:
        metrics = []
        for resource_metrics in request.resource_metrics:
            resource = {kv.key: _value(kv.value) for kv in resource_metrics.resource.attributes}
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")  # "histogram", "sum", "gauge", ...
                    data = getattr(metric, kind) if kind else None
                    points = []
                    for point in getattr(data, "data_points", ()):
                        decoded: dict[str, Any] = {
                            "attributes": {kv.key: _value(kv.value) for kv in point.attributes},
                            "start_time_unix_nano": point.start_time_unix_nano,
                            "time_unix_nano": point.time_unix_nano,
                        }
                        if kind == "histogram":
                            decoded.update(count=point.count, sum=point.sum,
                                           bucket_counts=list(point.bucket_counts),
                                           explicit_bounds=list(point.explicit_bounds))
                        else:
                            decoded["value"] = getattr(point, point.WhichOneof("value") or "as_double")
                        points.append(decoded)
                    metrics.append({
                        "name": metric.name,
                        "unit": metric.unit,
                        "description": metric.description,
                        "type": kind,
                        "temporality": getattr(data, "aggregation_temporality", None),
                        "points": points,
                        "scope": scope_metrics.scope.name,
                        "resource": resource,
                    })
        with self._lock:
            self.bodies.append(body)
            self._metrics.extend(metrics)

    def metrics(self) -> list[dict[str, Any]]:
        """Every metric of every export so far, decoded (one entry per metric per export)."""
        with self._lock:
            return list(self._metrics)

    def __enter__(self) -> OTLPReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-loopback", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["OTLPReceiver"]
