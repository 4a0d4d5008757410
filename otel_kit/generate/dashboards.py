"""Grafana dashboards generated from the metric catalogue, so no query can name a metric or a
label the kit does not emit.

Small typed builders rather than Grafana's foundation SDK: the SDK needs Python >= 3.11 (this
package supports 3.10), is alpha, and its epoch-stamped versions make a plain install resolve to
Grafana 10.1 types; the few fields a dashboard needs fit in the dataclasses below.

Panels query the raw series with `$__rate_interval`, not the recording rules, so the dashboards
work without the rules loaded and follow the time picker. Every selector carries the `job` and
`instance` variables; a counter that appears only at its first event (5xx, checkout timeouts)
is written `(part or 0 * whole)` so a healthy service shows 0, not "No data".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from otel_kit import catalogue as c
from otel_kit.catalogue import MetricSpec, prometheus_label, prometheus_name

__all__ = [
    "DASHBOARDS",
    "Dashboard",
    "Panel",
    "Query",
    "histogram_quantile",
    "label",
    "layout",
    "rate_sum",
    "ratio",
    "render",
    "selector",
    "to_json",
    "write",
]


def label(spec: MetricSpec, key: str) -> str:
    """The Prometheus label of one of `spec`'s attributes (a typo fails at import)."""
    if key not in spec.attributes:
        raise ValueError(f"{spec.name} has no attribute {key!r}")
    return prometheus_label(key)


def selector(metric: str, matchers: Sequence[str]) -> str:
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def _sum(by: Sequence[str]) -> str:
    return f"sum by ({', '.join(by)}) " if by else "sum"


def rate_sum(metric: str, matchers: Sequence[str], window: str, by: Sequence[str] = ()) -> str:
    return f"{_sum(by)}(rate({selector(metric, matchers)}[{window}]))"


def ratio(
    metric: str, part: Sequence[str], matchers: Sequence[str], window: str, by: Sequence[str] = ()
) -> str:
    """The share of `metric`'s rate matching `part`: 0 (not empty) while no `part` series exists."""
    whole = rate_sum(metric, matchers, window, by)
    return f"({rate_sum(metric, (*matchers, *part), window, by)} or 0 * {whole}) / {whole}"


def histogram_quantile(
    q: float, histogram: str, matchers: Sequence[str], window: str, by: Sequence[str] = ()
) -> str:
    rates = rate_sum(f"{histogram}_bucket", matchers, window, ("le", *by))
    return f"histogram_quantile({q}, {rates})"


# Runtime series (otel_kit/_instrumentation/runtime.py): named by the same translation.
PROCESS_CPU_TIME = prometheus_name("process.cpu.time", "s", monotonic_sum=True)
PROCESS_MEMORY_USAGE = prometheus_name("process.memory.usage", "By")
PROCESS_MEMORY_VIRTUAL = prometheus_name("process.memory.virtual", "By")
PROCESS_THREADS = prometheus_name("process.thread.count", "{thread}")
PROCESS_FDS = prometheus_name("process.unix.file_descriptor.count", "{file_descriptor}")
GC_COLLECTIONS = prometheus_name("cpython.gc.collections", "{collection}", monotonic_sum=True)
GC_COLLECTED = prometheus_name("cpython.gc.collected_objects", "{object}", monotonic_sum=True)
GC_UNCOLLECTABLE = prometheus_name(
    "cpython.gc.uncollectable_objects", "{object}", monotonic_sum=True
)
CPU_MODE, GC_GENERATION = prometheus_label("cpu.mode"), prometheus_label("cpython.gc.generation")

HTTP, DB, CLIENT = (
    c.HTTP_SERVER_REQUEST_DURATION,
    c.DB_CLIENT_OPERATION_DURATION,
    c.HTTP_CLIENT_REQUEST_DURATION,
)
ROUTE, STATUS, ERROR = (
    label(HTTP, "http.route"),
    label(HTTP, "http.response.status_code"),
    label(HTTP, "error.type"),
)
METHOD = label(c.HTTP_SERVER_ACTIVE_REQUESTS, "http.request.method")
DB_SYSTEM, DB_OPERATION = label(DB, "db.system.name"), label(DB, "db.operation.name")
POOL = label(c.DB_CLIENT_CONNECTION_COUNT, "pool.name")
POOL_STATE = label(c.DB_CLIENT_CONNECTION_COUNT, "db.client.connection.state")
CACHE, CACHE_RESULT = label(c.CACHE_REQUESTS, "cache.name"), label(c.CACHE_REQUESTS, "cache.result")
SERVER = tuple(label(CLIENT, k) for k in ("server.address", "server.port", "peer.service"))

SERVER_ERRORS = f'{STATUS}=~"5.."'
# A failed outbound call: no response (timeout, connection error) or a 5xx; a 4xx is the
# caller's mistake, not the dependency failing.
CLIENT_STATUS = label(CLIENT, "http.response.status_code")
CLIENT_ERROR = label(CLIENT, "error.type")
CLIENT_FAILURES = (f'{CLIENT_ERROR}!=""', f'{CLIENT_STATUS}!~"4.."')
DB_ERROR = label(DB, "error.type")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # a Grafana unit id: reqps, ops, s, percentunit, bytes, short
    queries: tuple[Query, ...]
    question: str  # Grafana's panel description; docs/dashboards.md lists it too
    kind: Literal["timeseries", "stat"] = "timeseries"
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()  # (from value, colour) above green


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    route_variable: bool = False


RATE = "$__rate_interval"
VARS = ('job=~"$job"', 'instance=~"$instance"')
ROUTE_VARS = (*VARS, f'{ROUTE}=~"$route"')
SQL, REDIS = (*VARS, f'{DB_SYSTEM}!="redis"'), (*VARS, f'{DB_SYSTEM}="redis"')
HTTP_COUNT, DB_COUNT = f"{HTTP.prometheus}_count", f"{DB.prometheus}_count"
CLIENT_COUNT, LOOKUPS = f"{CLIENT.prometheus}_count", c.CACHE_REQUESTS.prometheus
ACTIVE = c.HTTP_SERVER_ACTIVE_REQUESTS.prometheus
POOL_COUNT, POOL_MAX = (
    c.DB_CLIENT_CONNECTION_COUNT.prometheus,
    c.DB_CLIENT_CONNECTION_MAX.prometheus,
)
PENDING = c.DB_CLIENT_CONNECTION_PENDING_REQUESTS.prometheus
TIMEOUTS = c.DB_CLIENT_CONNECTION_TIMEOUTS.prometheus
WAIT = c.DB_CLIENT_CONNECTION_WAIT_TIME.prometheus
HIT, FAILED, USED = f'{CACHE_RESULT}="hit"', f'{DB_ERROR}!=""', f'{POOL_STATE}="used"'
ERROR_STEPS = ((0.01, "orange"), (0.05, "red"))


def _legend(by: Sequence[str], before: str = "", after: str = "") -> str:
    parts = [before, *(f"{{{{{name}}}}}" for name in by), after]
    return " ".join(part for part in parts if part) or "__auto"


def rates(metric: str, matchers: Sequence[str], *by: str, suffix: str = "") -> tuple[Query, ...]:
    return (Query(rate_sum(metric, matchers, RATE, by), _legend(by, after=suffix)),)


def ratios(
    metric: str, part: Sequence[str], matchers: Sequence[str], *by: str
) -> tuple[Query, ...]:
    return (Query(ratio(metric, part, matchers, RATE, by), _legend(by)),)


def quantiles(
    histogram: str, matchers: Sequence[str], *by: str, qs: Sequence[float] = (0.5, 0.95, 0.99)
) -> tuple[Query, ...]:
    return tuple(
        Query(
            histogram_quantile(q, histogram, matchers, RATE, by),
            _legend(by, before=f"p{q * 100:g}"),
        )
        for q in qs
    )


def gauges(metric: str, matchers: Sequence[str], *by: str, suffix: str = "") -> tuple[Query, ...]:
    return (Query(f"{_sum(by)}({selector(metric, matchers)})", _legend(by, after=suffix)),)


def or_zero(
    queries: tuple[Query, ...], like: str, matchers: Sequence[str], *by: str
) -> tuple[Query, ...]:
    """A counter that exists from its first event on: 0 per `like` series until then."""
    return tuple(
        Query(f"{q.expr} or 0 * {gauges(like, matchers, *by)[0].expr}", q.legend) for q in queries
    )


def stat(
    title: str,
    unit: str,
    queries: tuple[Query, ...],
    question: str,
    *,
    width: int = 4,
    thresholds: tuple[tuple[float, str], ...] = (),
) -> Panel:
    return Panel(title, unit, queries, question, "stat", width, 4, thresholds)


# fmt: off
SERVICE = Dashboard(
    "otel-kit-service",
    "otel-kit / Service overview",
    "HTTP server traffic, errors, latency and concurrency (http.server.* metrics).",
    route_variable=True,
    panels=(
        stat("Requests/s", "reqps", rates(HTTP_COUNT, ROUTE_VARS),
             "How much traffic does the service take?"),
        stat("Error ratio", "percentunit", ratios(HTTP_COUNT, (SERVER_ERRORS,), ROUTE_VARS),
             "What share of requests fail with a 5xx?", thresholds=ERROR_STEPS),
        stat("p95 latency", "s", quantiles(HTTP.prometheus, ROUTE_VARS, qs=(0.95,)),
             "How long do 95% of requests take at most?"),
        stat("p99 latency", "s", quantiles(HTTP.prometheus, ROUTE_VARS, qs=(0.99,)),
             "How long does the slowest 1% of requests take?"),
        stat("In progress", "short", gauges(ACTIVE, VARS),
             "How many requests are being served right now?"),
        stat("Targets up", "short", gauges("up", VARS),
             "How many of the service's instances does Prometheus reach?"),
        Panel("Request rate by route", "reqps", rates(HTTP_COUNT, ROUTE_VARS, ROUTE),
              "Which routes take the traffic?"),
        Panel("Error ratio by route", "percentunit",
              ratios(HTTP_COUNT, (SERVER_ERRORS,), ROUTE_VARS, ROUTE),
              "Which routes fail with a 5xx, and how often?"),
        Panel("Latency p50 / p95 / p99 by route", "s",
              quantiles(HTTP.prometheus, ROUTE_VARS, ROUTE),
              "Which routes are slow, typically and at the tail?"),
        Panel("Responses by status code", "reqps", rates(HTTP_COUNT, ROUTE_VARS, STATUS),
              "What do clients get back (2xx, 4xx, 5xx)?"),
        Panel("Errors by type", "reqps", rates(HTTP_COUNT, (*ROUTE_VARS, f'{ERROR}!=""'), ERROR),
              "Which exceptions or status codes make requests fail?"),
        Panel("Requests in progress by method", "short", gauges(ACTIVE, VARS, METHOD),
              "Is concurrency building up (a slow dependency, a stuck worker)?"),
    ),
)

POOL_USED, POOL_LIMIT = gauges(POOL_COUNT, (*VARS, USED), POOL), gauges(POOL_MAX, VARS, POOL)
POOL_SATURATION = Query(f"{POOL_USED[0].expr} / {POOL_LIMIT[0].expr}", _legend((POOL,)))

DATABASE = Dashboard(
    "otel-kit-database",
    "otel-kit / Database",
    "SQL statements and connection pools (db.client.* metrics); Redis is on the cache dashboard.",
    panels=(
        stat("Queries/s", "ops", rates(DB_COUNT, SQL),
             "How many statements does the service send?"),
        stat("p95 query latency", "s", quantiles(DB.prometheus, SQL, qs=(0.95,)),
             "How long do 95% of statements take at most?"),
        stat("Failed queries", "percentunit", ratios(DB_COUNT, (FAILED,), SQL),
             "What share of statements raise an error?", thresholds=ERROR_STEPS),
        stat("Pool saturation", "percentunit", (Query(f"max({POOL_SATURATION.expr})"),),
             "How close is the fullest pool to its limit (used / max)?",
             thresholds=((0.75, "orange"), (0.9, "red"))),
        stat("Pending checkouts", "short", gauges(PENDING, VARS),
             "How many requests wait for a connection right now?"),
        stat("Checkout timeouts/s", "ops", or_zero(rates(TIMEOUTS, VARS), POOL_COUNT, VARS),
             "Do requests give up waiting for a connection?", thresholds=((0.001, "red"),)),
        Panel("Queries/s by operation", "ops", rates(DB_COUNT, SQL, DB_SYSTEM, DB_OPERATION),
              "Which statements (SELECT, INSERT, ...) does the service send, how often?"),
        Panel("Query latency p50 / p95 / p99 by operation", "s",
              quantiles(DB.prometheus, SQL, DB_OPERATION),
              "Which kind of statement is slow?"),
        Panel("Failed queries by operation", "percentunit",
              ratios(DB_COUNT, (FAILED,), SQL, DB_SYSTEM, DB_OPERATION),
              "Which kind of statement fails, and how often?"),
        Panel("Pool connections", "short",
              gauges(POOL_COUNT, VARS, POOL, POOL_STATE)
              + gauges(POOL_MAX, VARS, POOL, suffix="max"),
              "How many connections are in use, idle, and allowed, per pool?"),
        Panel("Pool saturation (used / max)", "percentunit", (POOL_SATURATION,),
              "Is a pool running out of connections?"),
        Panel("Pending checkouts", "short", gauges(PENDING, VARS, POOL),
              "Are requests queueing for a connection?"),
        Panel("Connection wait time p50 / p95 / p99", "s", quantiles(WAIT, VARS, POOL),
              "How long does getting a connection from the pool take?"),
        Panel("Checkout timeouts/s", "ops",
              or_zero(rates(TIMEOUTS, VARS, POOL), POOL_COUNT, VARS, POOL),
              "Which pool makes requests give up waiting?"),
    ),
)

CACHE_DASHBOARD = Dashboard(
    "otel-kit-cache",
    "otel-kit / Cache",
    "Cache hits and misses (cache.requests) and Redis command latency.",
    panels=(
        stat("Hit ratio", "percentunit", ratios(LOOKUPS, (HIT,), VARS),
             "What share of cache lookups find the key?", width=8),
        stat("Lookups/s", "ops", rates(LOOKUPS, VARS),
             "How many cache lookups does the service make?", width=8),
        stat("p95 Redis latency", "s", quantiles(DB.prometheus, REDIS, qs=(0.95,)),
             "How long do 95% of Redis commands take at most?", width=8),
        Panel("Hit ratio by cache", "percentunit", ratios(LOOKUPS, (HIT,), VARS, CACHE),
              "Is each cache doing its job?"),
        Panel("Lookups/s by cache and result", "ops", rates(LOOKUPS, VARS, CACHE, CACHE_RESULT),
              "How many hits and misses does each cache serve?"),
        Panel("Redis commands/s by command", "ops", rates(DB_COUNT, REDIS, DB_OPERATION),
              "Which Redis commands does the service send?"),
        Panel("Redis latency p50 / p95 / p99 by command", "s",
              quantiles(DB.prometheus, REDIS, DB_OPERATION),
              "Which Redis command is slow?"),
    ),
)

OUTBOUND = Dashboard(
    "otel-kit-outbound",
    "otel-kit / Outbound calls",
    "HTTP calls the service makes (http.client.request.duration) by server and peer service. "
    "Failed = no response (timeout, connection error) or a 5xx.",
    panels=(
        stat("Calls/s", "reqps", rates(CLIENT_COUNT, VARS),
             "How many outbound calls does the service make?", width=8),
        stat("Failed calls", "percentunit", ratios(CLIENT_COUNT, CLIENT_FAILURES, VARS),
             "What share of outbound calls fail?", width=8, thresholds=ERROR_STEPS),
        stat("p95 call latency", "s", quantiles(CLIENT.prometheus, VARS, qs=(0.95,)),
             "How long do 95% of outbound calls take at most?", width=8),
        Panel("Calls/s by server", "reqps", rates(CLIENT_COUNT, VARS, *SERVER),
              "Which dependencies does the service call, how often?"),
        Panel("Failed calls by server", "percentunit",
              ratios(CLIENT_COUNT, CLIENT_FAILURES, VARS, *SERVER),
              "Which dependency is failing?"),
        Panel("Call latency p50 / p95 / p99 by server", "s",
              quantiles(CLIENT.prometheus, VARS, *SERVER),
              "Which dependency is slow?"),
        Panel("Calls by outcome", "reqps",
              rates(CLIENT_COUNT, VARS, SERVER[0], CLIENT_STATUS, CLIENT_ERROR),
              "What do dependencies answer (status code or error type)?"),
    ),
)

RUNTIME = Dashboard(
    "otel-kit-runtime",
    "otel-kit / Runtime",
    "Process CPU, memory, threads, file descriptors and CPython garbage collection.",
    panels=(
        Panel("CPU (share of one core)", "percentunit",
              rates(PROCESS_CPU_TIME, VARS, "instance", CPU_MODE),
              "Is a process CPU-bound (near 100%), in user or system code?"),
        Panel("Memory", "bytes",
              gauges(PROCESS_MEMORY_USAGE, VARS, "instance", suffix="resident")
              + gauges(PROCESS_MEMORY_VIRTUAL, VARS, "instance", suffix="virtual"),
              "Is resident memory growing (a leak) or near the container limit?"),
        Panel("GC collections/s by generation", "ops",
              rates(GC_COLLECTIONS, VARS, "instance", GC_GENERATION),
              "How often does the garbage collector run?"),
        Panel("GC objects/s", "ops",
              rates(GC_COLLECTED, VARS, "instance", suffix="collected")
              + rates(GC_UNCOLLECTABLE, VARS, "instance", suffix="uncollectable"),
              "How much garbage is collected, and is any of it uncollectable?"),
        Panel("Threads", "short", gauges(PROCESS_THREADS, VARS, "instance"),
              "Is the thread count stable (no leaked threads)?"),
        Panel("Open file descriptors", "short", gauges(PROCESS_FDS, VARS, "instance"),
              "Are sockets or files leaking toward the descriptor limit?"),
    ),
)
# fmt: on
DASHBOARDS: tuple[Dashboard, ...] = (SERVICE, DATABASE, CACHE_DASHBOARD, OUTBOUND, RUNTIME)

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _variable(name: str, title: str, query: str) -> dict[str, Any]:
    # allValue ".*" also matches series without the label (unmatched routes have no http_route).
    return {
        "name": name,
        "label": title,
        "type": "query",
        "datasource": _DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _variables(dashboard: Dashboard) -> list[dict[str, Any]]:
    variables = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
        },
        _variable("job", "Service (job)", "label_values(target_info, job)"),
        _variable("instance", "Instance", 'label_values(target_info{job=~"$job"}, instance)'),
    ]
    if dashboard.route_variable:
        routes = f"label_values({selector(HTTP_COUNT, VARS)}, {ROUTE})"
        variables.append(_variable("route", "Route", routes))
    return variables


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": colour, "value": value} for value, colour in panel.thresholds]
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": {"mode": "absolute", "steps": steps},
    }
    if panel.unit == "percentunit":
        defaults["min"] = 0
    options: dict[str, Any]
    if panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
        }
    else:
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {"fillOpacity": 10, "showPoints": "never"}
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.question,
        "datasource": _DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": _DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": True,
            }
            for i, query in enumerate(panel.queries)
        ],
    }


def layout(dashboard: Dashboard) -> list[tuple[Panel, int, int]]:
    """Each panel with its grid position: left to right, wrapping at Grafana's 24 columns."""
    placed, x, y, row_height = [], 0, 0, 0
    for panel in dashboard.panels:
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        placed.append((panel, x, y))
        x, row_height = x + panel.width, max(row_height, panel.height)
    return placed


def to_json(dashboard: Dashboard) -> dict[str, Any]:
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["otel-kit"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "links": [
            {
                "title": "otel-kit",
                "type": "dashboards",
                "tags": ["otel-kit"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": _variables(dashboard)},
        "panels": [_panel(p, i, x, y) for i, (p, x, y) in enumerate(layout(dashboard), 1)],
    }


def render() -> dict[str, str]:
    """File name -> dashboard JSON text, as committed under collector/grafana/dashboards/."""
    return {
        f"{d.uid}.json": json.dumps(to_json(d), indent=2, ensure_ascii=False) + "\n"
        for d in DASHBOARDS
    }


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
