"""PromQL for the dashboards and the rules: the series and labels Prometheus sees, taken from the
metric catalogue, and the few expression builders both generators write their queries with.

Every name here is derived from a `MetricSpec` (a label from one of its attributes), so a typo
fails at import and a renamed metric renames every query. `up` and `target_info` are the two
series Prometheus and the OTel translation add themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

from otel_kit import catalogue as c
from otel_kit.catalogue import MetricSpec, prometheus_label

__all__ = [
    "ACTIVE",
    "CACHE",
    "CACHE_RESULT",
    "CLIENT_COUNT",
    "CLIENT_DURATION",
    "CLIENT_ERROR",
    "CLIENT_FAILURES",
    "CLIENT_STATUS",
    "CPU_MODE",
    "DB_COUNT",
    "DB_DURATION",
    "DB_FAILED",
    "DB_OPERATION",
    "DB_SYSTEM",
    "ERROR",
    "GC_COLLECTED",
    "GC_COLLECTIONS",
    "GC_GENERATION",
    "GC_UNCOLLECTABLE",
    "HIT",
    "HTTP_BUCKET",
    "HTTP_COUNT",
    "HTTP_DURATION",
    "LOOKUPS",
    "METHOD",
    "OTELCOL_REFUSED",
    "OTELCOL_SEND_FAILED",
    "OTELCOL_SENT",
    "PENDING",
    "POOL",
    "POOL_COUNT",
    "POOL_MAX",
    "POOL_STATE",
    "PROCESS_CPU_TIME",
    "PROCESS_FDS",
    "PROCESS_MEMORY_USAGE",
    "PROCESS_MEMORY_VIRTUAL",
    "PROCESS_THREADS",
    "ROUTE",
    "SERVER",
    "SERVER_ERRORS",
    "STATUS",
    "TARGET_INFO",
    "TIMEOUTS",
    "UP",
    "USED",
    "WAIT",
    "histogram_quantile",
    "label",
    "or_zero",
    "pool_saturation",
    "rate_sum",
    "ratio",
    "selector",
    "sum_by",
]


def label(spec: MetricSpec, key: str) -> str:
    """The Prometheus label of one of `spec`'s attributes (a typo fails at import)."""
    if key not in spec.attributes:
        raise ValueError(f"{spec.name} has no attribute {key!r}")
    return prometheus_label(key)


_HTTP, _DB, _CLIENT = (
    c.HTTP_SERVER_REQUEST_DURATION,
    c.DB_CLIENT_OPERATION_DURATION,
    c.HTTP_CLIENT_REQUEST_DURATION,
)

# Series. A histogram's name is its base; `_count` and `_bucket` are series of it.
HTTP_DURATION, DB_DURATION, CLIENT_DURATION = _HTTP.prometheus, _DB.prometheus, _CLIENT.prometheus
HTTP_COUNT, HTTP_BUCKET = f"{HTTP_DURATION}_count", f"{HTTP_DURATION}_bucket"
DB_COUNT, CLIENT_COUNT = f"{DB_DURATION}_count", f"{CLIENT_DURATION}_count"
ACTIVE = c.HTTP_SERVER_ACTIVE_REQUESTS.prometheus
POOL_COUNT, POOL_MAX = (
    c.DB_CLIENT_CONNECTION_COUNT.prometheus,
    c.DB_CLIENT_CONNECTION_MAX.prometheus,
)
PENDING = c.DB_CLIENT_CONNECTION_PENDING_REQUESTS.prometheus
TIMEOUTS = c.DB_CLIENT_CONNECTION_TIMEOUTS.prometheus
WAIT = c.DB_CLIENT_CONNECTION_WAIT_TIME.prometheus
LOOKUPS = c.CACHE_REQUESTS.prometheus
PROCESS_CPU_TIME = c.PROCESS_CPU_TIME.prometheus
PROCESS_MEMORY_USAGE = c.PROCESS_MEMORY_USAGE.prometheus
PROCESS_MEMORY_VIRTUAL = c.PROCESS_MEMORY_VIRTUAL.prometheus
PROCESS_THREADS = c.PROCESS_THREAD_COUNT.prometheus
PROCESS_FDS = c.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT.prometheus
GC_COLLECTIONS = c.CPYTHON_GC_COLLECTIONS.prometheus
GC_COLLECTED = c.CPYTHON_GC_COLLECTED_OBJECTS.prometheus
GC_UNCOLLECTABLE = c.CPYTHON_GC_UNCOLLECTABLE_OBJECTS.prometheus
UP, TARGET_INFO = "up", "target_info"
# The Collector's own counters (its telemetry, scraped by the otel-collector-internal job).
OTELCOL_REFUSED = "otelcol_receiver_refused_metric_points_total"
OTELCOL_SEND_FAILED = "otelcol_exporter_send_failed_metric_points_total"  # from a 1st failure
OTELCOL_SENT = "otelcol_exporter_sent_metric_points_total"

# Labels.
ROUTE, STATUS, ERROR = (
    label(_HTTP, "http.route"),
    label(_HTTP, "http.response.status_code"),
    label(_HTTP, "error.type"),
)
METHOD = label(c.HTTP_SERVER_ACTIVE_REQUESTS, "http.request.method")
DB_SYSTEM, DB_OPERATION = label(_DB, "db.system.name"), label(_DB, "db.operation.name")
POOL = label(c.DB_CLIENT_CONNECTION_COUNT, "db.client.connection.pool.name")
POOL_STATE = label(c.DB_CLIENT_CONNECTION_COUNT, "db.client.connection.state")
CACHE, CACHE_RESULT = label(c.CACHE_REQUESTS, "cache.name"), label(c.CACHE_REQUESTS, "cache.result")
SERVER = tuple(label(_CLIENT, k) for k in ("server.address", "server.port", "service.peer.name"))
CLIENT_STATUS = label(_CLIENT, "http.response.status_code")
CLIENT_ERROR = label(_CLIENT, "error.type")
CPU_MODE = label(c.PROCESS_CPU_TIME, "cpu.mode")
GC_GENERATION = label(c.CPYTHON_GC_COLLECTIONS, "cpython.gc.generation")

# Matchers.
SERVER_ERRORS = f'{STATUS}=~"5.."'
# A failed outbound call: no response (timeout, connection error) or a 5xx; a 4xx is the
# caller's mistake, not the dependency failing.
CLIENT_FAILURES = (f'{CLIENT_ERROR}!=""', f'{CLIENT_STATUS}!~"4.."')
DB_FAILED = f'{label(_DB, "error.type")}!=""'
HIT, USED = f'{CACHE_RESULT}="hit"', f'{POOL_STATE}="used"'


def selector(metric: str, matchers: Sequence[str]) -> str:
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def _sum(by: Sequence[str]) -> str:
    return f"sum by ({', '.join(by)}) " if by else "sum"


def sum_by(metric: str, matchers: Sequence[str], by: Sequence[str] = ()) -> str:
    """The sum of a gauge's series, per `by`."""
    return f"{_sum(by)}({selector(metric, matchers)})"


def rate_sum(metric: str, matchers: Sequence[str], window: str, by: Sequence[str] = ()) -> str:
    return f"{_sum(by)}(rate({selector(metric, matchers)}[{window}]))"


def or_zero(expr: str, like: str) -> str:
    """`expr`, or 0 for each series of `like`: a counter that exists from its first event on."""
    return f"{expr} or 0 * {like}"


def ratio(
    metric: str, part: Sequence[str], matchers: Sequence[str], window: str, by: Sequence[str] = ()
) -> str:
    """The share of `metric`'s rate matching `part`: 0 (not empty) while no `part` series exists."""
    whole = rate_sum(metric, matchers, window, by)
    return f"({or_zero(rate_sum(metric, (*matchers, *part), window, by), whole)}) / {whole}"


def histogram_quantile(
    q: float, histogram: str, matchers: Sequence[str], window: str, by: Sequence[str] = ()
) -> str:
    rates = rate_sum(f"{histogram}_bucket", matchers, window, ("le", *by))
    return f"histogram_quantile({q}, {rates})"


def pool_saturation(matchers: Sequence[str], by: Sequence[str]) -> str:
    """Used connections over the pool's limit, per `by`."""
    return f"{sum_by(POOL_COUNT, (*matchers, USED), by)} / {sum_by(POOL_MAX, matchers, by)}"
