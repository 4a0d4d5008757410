"""The metric catalogue: the one place metric names, units and attributes are written down.

Instrumentation, exporters, dashboards, rules and tests all take names from here. OTel names
follow the stable semantic conventions; `prometheus_name()` gives what Prometheus sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BODY_SIZE_BUCKETS",
    "CACHE_REQUESTS",
    "CPYTHON_GC_COLLECTED_OBJECTS",
    "CPYTHON_GC_COLLECTIONS",
    "CPYTHON_GC_UNCOLLECTABLE_OBJECTS",
    "DB_CLIENT_CONNECTION_COUNT",
    "DB_CLIENT_CONNECTION_MAX",
    "DB_CLIENT_CONNECTION_PENDING_REQUESTS",
    "DB_CLIENT_CONNECTION_TIMEOUTS",
    "DB_CLIENT_CONNECTION_WAIT_TIME",
    "DB_CLIENT_OPERATION_DURATION",
    "DEFAULT_DURATION_BUCKETS",
    "HTTP_CLIENT_REQUEST_DURATION",
    "HTTP_SERVER_ACTIVE_REQUESTS",
    "HTTP_SERVER_REQUEST_BODY_SIZE",
    "HTTP_SERVER_REQUEST_DURATION",
    "HTTP_SERVER_RESPONSE_BODY_SIZE",
    "HTTP_SERVER_TIME_TO_FIRST_BYTE",
    "KNOWN_HTTP_METHODS",
    "PROCESS_CPU_TIME",
    "PROCESS_MEMORY_USAGE",
    "PROCESS_MEMORY_VIRTUAL",
    "PROCESS_THREAD_COUNT",
    "PROCESS_UNIX_FILE_DESCRIPTOR_COUNT",
    "MetricSpec",
    "prometheus_label",
    "prometheus_name",
    "unit_suffix",
]

# Semantic-conventions advice for HTTP/DB duration histograms, in seconds.
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

# Body size bounds in bytes (semconv gives no advice for sizes, and the SDK's default bounds,
# 0 to 10000, would put every body above 10 kB in one bucket): 0 apart (no body), then x4 steps
# from 64 B to 64 MiB.
BODY_SIZE_BUCKETS: tuple[float, ...] = (0.0, *(64.0 * 4**i for i in range(11)))

# Methods the HTTP conventions know; any other method is recorded as "_OTHER".
KNOWN_HTTP_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "histogram" | "updowncounter" | "counter"
    unit: str
    description: str
    attributes: tuple[str, ...]

    @property
    def prometheus(self) -> str:
        return prometheus_name(self.name, self.unit, monotonic_sum=self.kind == "counter")


HTTP_SERVER_REQUEST_DURATION = MetricSpec(
    name="http.server.request.duration",
    kind="histogram",
    unit="s",
    description="Duration of HTTP server requests.",
    attributes=("http.request.method", "http.route", "http.response.status_code", "error.type"),
)
HTTP_SERVER_ACTIVE_REQUESTS = MetricSpec(
    name="http.server.active_requests",
    kind="updowncounter",
    unit="{request}",
    description="Number of active HTTP server requests.",
    attributes=("http.request.method",),
)
# Opt-in (http_body_sizes): the bytes of the body as it passed through the ASGI app, so
# compressed when the app or a middleware inside otel-kit's compressed it, as semconv asks.
HTTP_SERVER_REQUEST_BODY_SIZE = MetricSpec(
    name="http.server.request.body.size",
    kind="histogram",
    unit="By",
    description="Size of HTTP server request bodies.",
    attributes=HTTP_SERVER_REQUEST_DURATION.attributes,
)
HTTP_SERVER_RESPONSE_BODY_SIZE = MetricSpec(
    name="http.server.response.body.size",
    kind="histogram",
    unit="By",
    description="Size of HTTP server response bodies.",
    attributes=HTTP_SERVER_REQUEST_DURATION.attributes,
)
# Opt-in (http_time_to_first_byte). Semconv has no such metric, and its naming rules advise
# against a name of one's own in its namespaces (http.*): hence otel_kit.*.
HTTP_SERVER_TIME_TO_FIRST_BYTE = MetricSpec(
    name="otel_kit.http.server.time_to_first_byte",
    kind="histogram",
    unit="s",
    description="Time from the start of an HTTP server request to the first byte of its "
    "response body.",
    attributes=("http.request.method", "http.route", "http.response.status_code"),
)

DB_CLIENT_OPERATION_DURATION = MetricSpec(
    name="db.client.operation.duration",
    kind="histogram",
    unit="s",
    description="Duration of database client operations.",
    # server.*: Redis sets them (clients of several servers, same db index); SQLAlchemy not yet.
    attributes=(
        "db.system.name",
        "db.operation.name",
        "db.namespace",
        "error.type",
        "server.address",
        "server.port",
    ),
)
DB_CLIENT_CONNECTION_COUNT = MetricSpec(
    name="db.client.connection.count",
    kind="updowncounter",
    unit="{connection}",
    description="Number of connections in the state given by db.client.connection.state.",
    attributes=("pool.name", "db.client.connection.state"),
)
DB_CLIENT_CONNECTION_MAX = MetricSpec(
    name="db.client.connection.max",
    kind="updowncounter",
    unit="{connection}",
    description="The maximum number of open connections allowed.",
    attributes=("pool.name",),
)
DB_CLIENT_CONNECTION_PENDING_REQUESTS = MetricSpec(
    name="db.client.connection.pending_requests",
    kind="updowncounter",
    unit="{request}",
    description="Number of current pending requests for an open connection.",
    attributes=("pool.name",),
)
DB_CLIENT_CONNECTION_TIMEOUTS = MetricSpec(
    name="db.client.connection.timeouts",
    kind="counter",
    unit="{timeout}",
    description="Number of timeouts while obtaining a connection from the pool.",
    attributes=("pool.name",),
)
DB_CLIENT_CONNECTION_WAIT_TIME = MetricSpec(
    name="db.client.connection.wait_time",
    kind="histogram",
    unit="s",
    description="The time it took to obtain an open connection from the pool.",
    attributes=("pool.name",),
)
CACHE_REQUESTS = MetricSpec(
    name="cache.requests",
    kind="counter",
    unit="{request}",
    description="Cache lookups by result (hit or miss).",
    attributes=("cache.name", "cache.result"),
)
HTTP_CLIENT_REQUEST_DURATION = MetricSpec(
    name="http.client.request.duration",
    kind="histogram",
    unit="s",
    description="Duration of HTTP client requests.",
    attributes=(
        "http.request.method",
        "server.address",
        "server.port",
        "http.response.status_code",
        "error.type",
        "peer.service",
    ),
)

# Runtime (otel_kit/_instrumentation/runtime.py): observable instruments read at collection time.
PROCESS_CPU_TIME = MetricSpec(
    name="process.cpu.time",
    kind="counter",
    unit="s",
    description="Total CPU seconds broken down by different CPU modes.",
    attributes=("cpu.mode",),
)
PROCESS_MEMORY_USAGE = MetricSpec(
    name="process.memory.usage",
    kind="updowncounter",
    unit="By",
    description="The amount of physical memory in use.",
    attributes=(),
)
PROCESS_MEMORY_VIRTUAL = MetricSpec(
    name="process.memory.virtual",
    kind="updowncounter",
    unit="By",
    description="The amount of committed virtual memory.",
    attributes=(),
)
PROCESS_UNIX_FILE_DESCRIPTOR_COUNT = MetricSpec(
    name="process.unix.file_descriptor.count",
    kind="updowncounter",
    unit="{file_descriptor}",
    description="Number of UNIX file descriptors in use by the process.",
    attributes=(),
)
PROCESS_THREAD_COUNT = MetricSpec(
    name="process.thread.count",
    kind="updowncounter",
    unit="{thread}",
    description="Process threads count.",
    attributes=(),
)
CPYTHON_GC_COLLECTIONS = MetricSpec(
    name="cpython.gc.collections",
    kind="counter",
    unit="{collection}",
    description="Times the generation ran, per GC generation, since interpreter start.",
    attributes=("cpython.gc.generation",),
)
CPYTHON_GC_COLLECTED_OBJECTS = MetricSpec(
    name="cpython.gc.collected_objects",
    kind="counter",
    unit="{object}",
    description="Objects it collected, per GC generation, since interpreter start.",
    attributes=("cpython.gc.generation",),
)
CPYTHON_GC_UNCOLLECTABLE_OBJECTS = MetricSpec(
    name="cpython.gc.uncollectable_objects",
    kind="counter",
    unit="{object}",
    description="Uncollectable found, per GC generation, since interpreter start.",
    attributes=("cpython.gc.generation",),
)

# OTel unit -> Prometheus suffix, as the OTel-to-Prometheus compatibility spec maps them.
_UNIT_SUFFIXES = {
    "s": "seconds",
    "ms": "milliseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "1": "ratio",
    "%": "percent",
}
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORES = re.compile(r"__+")


def unit_suffix(unit: str) -> str:
    """The Prometheus name suffix for an OTel unit (`s` -> `seconds`; `{request}` -> '')."""
    return "" if unit.startswith("{") else _UNIT_SUFFIXES.get(unit, _INVALID.sub("_", unit))


def prometheus_name(name: str, unit: str = "", *, monotonic_sum: bool = False) -> str:
    """The Prometheus metric name for an OTel instrument (without _bucket/_count/_sum)."""
    base = _UNDERSCORES.sub("_", _INVALID.sub("_", name)).strip("_")
    if base[:1].isdigit():
        base = "_" + base
    suffix = unit_suffix(unit)
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if monotonic_sum and not base.endswith("_total"):
        base += "_total"
    return base


def prometheus_label(key: str) -> str:
    """The Prometheus label name for an OTel attribute key (`http.route` -> `http_route`)."""
    label = _INVALID_LABEL.sub("_", key)
    return "key_" + label if label[:1].isdigit() else label
