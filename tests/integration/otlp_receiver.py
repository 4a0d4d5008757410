"""A local OTLP metrics receiver on loopback, HTTP (http/protobuf) or gRPC.

No Collector binary is installable here, so this stands in for the Collector's OTLP receiver:
it decodes every request with the official `opentelemetry-proto` classes and keeps it. It can
be stopped and started again on the same port, which is how the outage tests take the
"Collector" down and bring it back.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
    MetricsServiceServicer,
    add_MetricsServiceServicer_to_server,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from tests.integration.processes import free_port


@dataclass
class Received:
    request: ExportMetricsServiceRequest
    headers: dict[str, str]  # lower-case names
    path: str  # HTTP path; the gRPC method for gRPC


class OTLPReceiver:
    """`with OTLPReceiver("grpc") as receiver:`; `receiver.endpoint` is what the app pushes to."""

    def __init__(self, protocol: str = "http/protobuf", port: int | None = None) -> None:
        self.protocol = protocol
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        assert self._stop is None, "already running"
        self._stop = self._start_grpc() if self.protocol == "grpc" else self._start_http()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def __enter__(self) -> OTLPReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextmanager
    def down(self) -> Iterator[None]:
        """The receiver is not listening inside the block (connections are refused)."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _keep(self, body: bytes, headers: dict[str, str], path: str) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        with self._lock:
            self.received.append(Received(request, headers, path))

    def _start_http(self) -> Callable[[], None]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(415)
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver._keep(body, headers, self.path)
                reply = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop

    def _start_grpc(self) -> Callable[[], None]:
        receiver = self

        class Servicer(MetricsServiceServicer):
            def Export(
                self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext
            ) -> ExportMetricsServiceResponse:
                headers = {key.lower(): str(value) for key, value in context.invocation_metadata()}
                receiver._keep(request.SerializeToString(), headers, "Export")
                return ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        add_MetricsServiceServicer_to_server(Servicer(), server)  # type: ignore[no-untyped-call]
        if server.add_insecure_port(f"127.0.0.1:{self.port}") != self.port:
            raise RuntimeError(f"gRPC receiver could not bind port {self.port}")
        server.start()
        return lambda: server.stop(grace=None).wait(timeout=5)

    # -- reading what arrived ---------------------------------------------------------------

    def requests(self) -> list[ExportMetricsServiceRequest]:
        with self._lock:
            return [item.request for item in self.received]

    def wait_for(
        self, predicate: Callable[[ExportMetricsServiceRequest], bool], timeout: float = 15
    ) -> ExportMetricsServiceRequest:
        """The first request (received so far or within `timeout` s) that satisfies
        `predicate`; fails the test when none does."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            requests = self.requests()
            for request in requests[seen:]:
                if predicate(request):
                    return request
            seen = len(requests)
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching OTLP request within {timeout} s ({seen} seen)")
            time.sleep(0.05)

    def wait_for_count(self, count: int, timeout: float = 15) -> None:
        """Until at least `count` requests arrived; fails the test after `timeout` s."""
        deadline = time.monotonic() + timeout
        while len(self.requests()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests())} OTLP requests, not {count}")
            time.sleep(0.05)


def value_of(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def resource(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    (resource_metrics,) = request.resource_metrics  # otel-kit sends one resource
    return attributes(resource_metrics.resource.attributes)


def metrics(request: ExportMetricsServiceRequest) -> dict[str, tuple[str, Metric]]:
    """{metric name: (instrumentation scope name, metric)}."""
    found: dict[str, tuple[str, Metric]] = {}
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                assert metric.name not in found, f"{metric.name} sent twice"
                found[metric.name] = (scope_metrics.scope.name, metric)
    return found


def points(request: ExportMetricsServiceRequest, name: str) -> dict[frozenset[Any], Any]:
    """{frozenset of attribute items: data point} for metric `name` (empty if absent)."""
    if name not in metrics(request):
        return {}
    metric = metrics(request)[name][1]
    data = getattr(metric, metric.WhichOneof("data"))
    return {frozenset(attributes(point.attributes).items()): point for point in data.data_points}


def total_count(request: ExportMetricsServiceRequest, name: str, **wanted: Any) -> float:
    """Sum of `count` (histograms) or `as_int`/`as_double` (sums) over the points of `name`
    whose attributes include `wanted`."""
    total = 0.0
    for key, point in points(request, name).items():
        if set(wanted.items()) <= key:
            if hasattr(point, "bucket_counts"):
                total += point.count
            else:
                total += getattr(point, point.WhichOneof("value"))
    return total
