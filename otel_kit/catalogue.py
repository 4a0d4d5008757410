"""The metric catalogue: the one place metric names, units and attributes are written down.

Instrumentation, exporters, dashboards, rules and tests all take names from here. OTel names
follow the stable semantic conventions; `prometheus_name()` gives what Prometheus sees.
"""

from __future__ import annotations

import functools
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
    "DB_DURATION_BUCKETS",
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
    "TRANSLATION_STRATEGIES",
    "MetricSpec",
    "prometheus_label",
    "prometheus_name",
    "unit_suffix",
]

# Semantic-conventions advice for HTTP duration histograms, in seconds.
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
# Semantic-conventions advice for db.client.operation.duration, in seconds.
DB_DURATION_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

# Body size bounds in bytes (semconv gives no advice for sizes, and the SDK's default bounds,
# 0 to 10000, would put every body above 10 kB in one bucket): 0 apart (no body), then x4 steps
# from 64 B to 64 MiB.
BODY_SIZE_BUCKETS: tuple[float, ...] = (0.0, *(64.0 * 4**i for i in range(11)))

# Methods the HTTP conventions know (RFC 9110, PATCH, QUERY): the default of the
# http_known_methods setting; any other method is recorded as "_OTHER".
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
    attributes=(
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "error.type",
        "url.scheme",
        "network.protocol.version",
    ),
)
HTTP_SERVER_ACTIVE_REQUESTS = MetricSpec(
    name="http.server.active_requests",
    kind="updowncounter",
    unit="{request}",
    description="Number of active HTTP server requests.",
    attributes=("http.request.method", "url.scheme"),
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
    # server.*: as configured (engine URL, Redis pool); none for SQLite. db.response.status_code:
    # SQLSTATE, or a Redis error reply's code. The order is otel_kit/_instrumentation/_db.py's.
    attributes=(
        "db.system.name",
        "db.operation.name",
        "db.namespace",
        "error.type",
        "server.address",
        "server.port",
        "db.response.status_code",
        "db.query.summary",  # opt-in: db_query_summary
    ),
)
DB_CLIENT_CONNECTION_COUNT = MetricSpec(
    name="db.client.connection.count",
    kind="updowncounter",
    unit="{connection}",
    description="The number of connections that are currently in state described by the `state` "
    "attribute.",
    attributes=("db.client.connection.pool.name", "db.client.connection.state"),
)
DB_CLIENT_CONNECTION_MAX = MetricSpec(
    name="db.client.connection.max",
    kind="updowncounter",
    unit="{connection}",
    description="The maximum number of open connections allowed.",
    attributes=("db.client.connection.pool.name",),
)
DB_CLIENT_CONNECTION_PENDING_REQUESTS = MetricSpec(
    name="db.client.connection.pending_requests",
    kind="updowncounter",
    unit="{request}",
    description="The number of current pending requests for an open connection.",
    attributes=("db.client.connection.pool.name",),
)
DB_CLIENT_CONNECTION_TIMEOUTS = MetricSpec(
    name="db.client.connection.timeouts",
    kind="counter",
    unit="{timeout}",
    description="The number of connection timeouts that have occurred trying to obtain a "
    "connection from the pool.",
    attributes=("db.client.connection.pool.name",),
)
DB_CLIENT_CONNECTION_WAIT_TIME = MetricSpec(
    name="db.client.connection.wait_time",
    kind="histogram",
    unit="s",
    description="The time it took to obtain an open connection from the pool.",
    attributes=("db.client.connection.pool.name",),
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
        "network.protocol.version",  # "1.1", "2": from the response, absent without one
        # From the peer_services map (semconv v1.44's name; peer.service is deprecated).
        "service.peer.name",
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
    description="The number of times a generation was collected since interpreter start.",
    attributes=("cpython.gc.generation",),
)
CPYTHON_GC_COLLECTED_OBJECTS = MetricSpec(
    name="cpython.gc.collected_objects",
    kind="counter",
    unit="{object}",
    description="The total number of objects collected inside a generation since interpreter "
    "start.",
    attributes=("cpython.gc.generation",),
)
CPYTHON_GC_UNCOLLECTABLE_OBJECTS = MetricSpec(
    name="cpython.gc.uncollectable_objects",
    kind="counter",
    unit="{object}",
    description="The total number of objects which were found to be uncollectable inside a "
    "generation since interpreter start.",
    attributes=("cpython.gc.generation",),
)

# Prometheus 3's `otlp.translation_strategy` values (the Collector's prometheus exporter takes
# the same): how OTel names become Prometheus names. The first is the default everywhere.
TRANSLATION_STRATEGIES = (
    "UnderscoreEscapingWithSuffixes",
    "UnderscoreEscapingWithoutSuffixes",
    "NoUTF8EscapingWithSuffixes",
    "NoTranslation",
)
_ESCAPING = frozenset(TRANSLATION_STRATEGIES[:2])
_SUFFIXES = frozenset(TRANSLATION_STRATEGIES[::2])

# OTel (UCUM) unit -> Prometheus unit word: the compatibility spec's table, as Prometheus'
# otlptranslator (the Collector's and Prometheus' own OTLP translation) has it; another unit
# is kept as written (escaped).
_UNIT_WORDS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",  # dimensionless: gauges get _ratio instead (prometheus_name)
    "%": "percent",
}
# The unit after "/" in a rate (`m/s` -> meters_per_second); note `m` here is a minute.
_PER_UNIT_WORDS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
_NAME_SEPARATORS = re.compile(r"[^a-zA-Z0-9:]+")  # also "_": tokens, rejoined with one "_"
_NAME_INVALID = re.compile(r"[^a-zA-Z0-9:_]+")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9]+")  # a run of them (underscores too) -> one "_"


def _unit_words(unit: str) -> tuple[str, str]:
    """(main, per) words of a unit: `By/s` -> (bytes, per_second); `{request}/s` -> ('',
    per_second). A part in braces is an annotation, dropped."""
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    main_word = "" if not main or "{" in main or "}" in main else _UNIT_WORDS.get(main, main)
    per_word = ""
    if per and "{" not in per and "}" not in per:
        per_word = "per_" + _PER_UNIT_WORDS.get(per, per)
    return main_word, per_word


def _clean_unit(word: str) -> str:
    return _LABEL_INVALID.sub("_", word).removeprefix("_") if word else ""


def unit_suffix(unit: str) -> str:
    """The Prometheus unit word for an OTel unit (`s` -> seconds, `By/s` -> bytes_per_second,
    `{request}` and `1` -> ''): the exposition's UNIT metadata."""
    main, per = (_clean_unit(word) for word in _unit_words(unit))
    return "_".join(word for word in (main, per) if word).strip("_")


def _trim(name: str, suffix: str) -> str:
    """`name` without `suffix` and the separator before it (a name that is only it stays)."""
    if name.endswith(suffix) and len(name) > len(suffix) + 1:
        return name[: -len(suffix) - 1]
    return name


@functools.lru_cache(maxsize=4096)
def prometheus_name(
    name: str,
    unit: str = "",
    *,
    monotonic_sum: bool = False,
    gauge: bool = False,
    strategy: str = TRANSLATION_STRATEGIES[0],
) -> str:
    """The Prometheus metric name for an OTel instrument (without _bucket/_count/_sum), as
    Prometheus' otlptranslator builds it for `strategy`: `_total` on monotonic sums, the unit
    word unless the name holds it already, `_ratio` on gauges (not sums) of unit `1`. '' when
    nothing of the name is left (the metric cannot be exported)."""
    suffixes = strategy in _SUFFIXES
    if strategy not in _ESCAPING:  # UTF-8 names: suffixes only
        if not suffixes:
            return name
        deferred = []
        if unit == "1" and gauge:
            name = _trim(name, "ratio")
            deferred.append("_ratio")
        if monotonic_sum:
            name = _trim(name, "total")
            deferred.append("_total")
        main, per = _unit_words(unit)
        if per:
            name = _trim(name, per)
            deferred.append("_" + per)
        if main and not name.endswith(main):
            name = f"{name}_{main}"
        return name + "".join(reversed(deferred))
    if not suffixes:
        base = "_".join(t for t in _NAME_INVALID.split(name) if t)
        return _leading_digit(base, name)
    tokens = [t for t in _NAME_SEPARATORS.split(name) if t]
    main, per = (_clean_unit(word) for word in _unit_words(unit))
    if main in tokens:
        main = ""
    per = "" if per == "per_" else per.removesuffix("_")
    if per in tokens:
        per = ""
    if per:
        main = main.removesuffix("_")
    tokens += [word for word in (main, per) if word]
    if monotonic_sum:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and gauge:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    return _leading_digit("_".join(tokens), name)


def _leading_digit(base: str, name: str) -> str:
    if base[:1].isdigit():
        return "_" + base
    return base if base == name or base.strip("_") else ""  # '': nothing left to name it by


@functools.lru_cache(maxsize=4096)
def prometheus_label(key: str, strategy: str = TRANSLATION_STRATEGIES[0]) -> str:
    """The Prometheus label name for an OTel attribute key (`http.route` -> `http_route`), as
    otlptranslator's label namer (the Collector's defaults) builds it: each run of characters
    other than letters and digits becomes one `_`; `key_` before a leading digit or a single
    leading `_`. '' for a key that cannot be a label (empty, only underscores)."""
    if strategy not in _ESCAPING:
        return "" if not key.strip("_") else key
    reserved = len(key) >= 4 and key.startswith("__") and key.endswith("__")
    label = _LABEL_INVALID.sub("_", key[2:-2] if reserved else key)
    if reserved:
        label = f"__{label}__"
    if label[:1].isdigit():
        label = "key_" + label
    elif label.startswith("_") and not label.startswith("__"):
        label = "key" + label
    return "" if not label.strip("_") else label
