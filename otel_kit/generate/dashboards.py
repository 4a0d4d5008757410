"""The five Grafana dashboards (service, database, cache, outbound, runtime), generated from the
metric catalogue, so no query can name a metric or a label the kit does not emit.

Panels query the raw series with `$__rate_interval`, not the recording rules, so the dashboards
work without the rules loaded and follow the time picker. Every selector carries the `job` and
`instance` variables; a counter that appears only at its first event (5xx, checkout timeouts)
is written `(part or 0 * whole)` so a healthy service shows 0, not "No data". The PromQL comes
from `_promql`, the panels and their JSON from `_grafana`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otel_kit.generate._files import write_files
from otel_kit.generate._grafana import (
    ROUTE_VARS,
    VARS,
    Dashboard,
    Panel,
    Query,
    gauges,
    legend,
    quantiles,
    rates,
    ratios,
    stat,
    to_json,
    zero_filled,
)
from otel_kit.generate._promql import (
    ACTIVE,
    CACHE,
    CACHE_RESULT,
    CLIENT_COUNT,
    CLIENT_DURATION,
    CLIENT_ERROR,
    CLIENT_FAILURES,
    CLIENT_STATUS,
    CPU_MODE,
    DB_COUNT,
    DB_DURATION,
    DB_FAILED,
    DB_OPERATION,
    DB_SYSTEM,
    ERROR,
    GC_COLLECTED,
    GC_COLLECTIONS,
    GC_GENERATION,
    GC_UNCOLLECTABLE,
    HIT,
    HTTP_COUNT,
    HTTP_DURATION,
    LOOKUPS,
    METHOD,
    PENDING,
    POOL,
    POOL_COUNT,
    POOL_MAX,
    POOL_STATE,
    PROCESS_CPU_TIME,
    PROCESS_FDS,
    PROCESS_MEMORY_USAGE,
    PROCESS_MEMORY_VIRTUAL,
    PROCESS_THREADS,
    ROUTE,
    SERVER,
    SERVER_ERRORS,
    STATUS,
    TARGET_INFO,
    TIMEOUTS,
    WAIT,
    pool_saturation,
    selector,
)
from otel_kit.generate._strategy import DEFAULT, Rewrite, rewrite

__all__ = ["DASHBOARDS", "render", "write"]

SQL, REDIS = (*VARS, f'{DB_SYSTEM}!="redis"'), (*VARS, f'{DB_SYSTEM}="redis"')
ERROR_STEPS = ((0.01, "orange"), (0.05, "red"))

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
        stat("p95 latency", "s", quantiles(HTTP_DURATION, ROUTE_VARS, qs=(0.95,)),
             "How long do 95% of requests take at most?"),
        stat("p99 latency", "s", quantiles(HTTP_DURATION, ROUTE_VARS, qs=(0.99,)),
             "How long does the slowest 1% of requests take?"),
        stat("In progress", "short", gauges(ACTIVE, VARS),
             "How many requests are being served right now?"),
        stat("Instances up", "short", (Query(f"count({selector(TARGET_INFO, VARS)})"),),
             "How many of the service's instances report metrics: scraped (direct mode) or "
             "pushed within the Collector's expiry (collector mode)?"),
        Panel("Request rate by route", "reqps", rates(HTTP_COUNT, ROUTE_VARS, ROUTE),
              "Which routes take the traffic?"),
        Panel("Error ratio by route", "percentunit",
              ratios(HTTP_COUNT, (SERVER_ERRORS,), ROUTE_VARS, ROUTE),
              "Which routes fail with a 5xx, and how often?"),
        Panel("Latency p50 / p95 / p99 by route", "s",
              quantiles(HTTP_DURATION, ROUTE_VARS, ROUTE),
              "Which routes are slow, typically and at the tail?"),
        Panel("Responses by status code", "reqps", rates(HTTP_COUNT, ROUTE_VARS, STATUS),
              "What do clients get back (2xx, 4xx, 5xx)?"),
        Panel("Errors by type", "reqps", rates(HTTP_COUNT, (*ROUTE_VARS, f'{ERROR}!=""'), ERROR),
              "Which exceptions or status codes make requests fail?"),
        Panel("Requests in progress by method", "short", gauges(ACTIVE, VARS, METHOD),
              "Is concurrency building up (a slow dependency, a stuck worker)?"),
    ),
)

POOL_SATURATION = Query(pool_saturation(VARS, (POOL,)), legend((POOL,)))

DATABASE = Dashboard(
    "otel-kit-database",
    "otel-kit / Database",
    "SQL statements and connection pools (db.client.* metrics); Redis is on the cache dashboard.",
    panels=(
        stat("Queries/s", "ops", rates(DB_COUNT, SQL),
             "How many statements does the service send?"),
        stat("p95 query latency", "s", quantiles(DB_DURATION, SQL, qs=(0.95,)),
             "How long do 95% of statements take at most?"),
        stat("Failed queries", "percentunit", ratios(DB_COUNT, (DB_FAILED,), SQL),
             "What share of statements raise an error?", thresholds=ERROR_STEPS),
        stat("Pool saturation", "percentunit", (Query(f"max({POOL_SATURATION.expr})"),),
             "How close is the fullest pool to its limit (used / max)?",
             thresholds=((0.75, "orange"), (0.9, "red"))),
        stat("Pending checkouts", "short", gauges(PENDING, VARS),
             "How many requests wait for a connection right now?"),
        stat("Checkout timeouts/s", "ops", zero_filled(rates(TIMEOUTS, VARS), POOL_COUNT, VARS),
             "Do requests give up waiting for a connection?", thresholds=((0.001, "red"),)),
        Panel("Queries/s by operation", "ops", rates(DB_COUNT, SQL, DB_SYSTEM, DB_OPERATION),
              "Which statements (SELECT, INSERT, ...) does the service send, how often?"),
        Panel("Query latency p50 / p95 / p99 by operation", "s",
              quantiles(DB_DURATION, SQL, DB_OPERATION),
              "Which kind of statement is slow?"),
        Panel("Failed queries by operation", "percentunit",
              ratios(DB_COUNT, (DB_FAILED,), SQL, DB_SYSTEM, DB_OPERATION),
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
              zero_filled(rates(TIMEOUTS, VARS, POOL), POOL_COUNT, VARS, POOL),
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
        stat("p95 Redis latency", "s", quantiles(DB_DURATION, REDIS, qs=(0.95,)),
             "How long do 95% of Redis commands take at most?", width=8),
        Panel("Hit ratio by cache", "percentunit", ratios(LOOKUPS, (HIT,), VARS, CACHE),
              "Is each cache doing its job?"),
        Panel("Lookups/s by cache and result", "ops", rates(LOOKUPS, VARS, CACHE, CACHE_RESULT),
              "How many hits and misses does each cache serve?"),
        Panel("Redis commands/s by command", "ops", rates(DB_COUNT, REDIS, DB_OPERATION),
              "Which Redis commands does the service send?"),
        Panel("Redis latency p50 / p95 / p99 by command", "s",
              quantiles(DB_DURATION, REDIS, DB_OPERATION),
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
        stat("p95 call latency", "s", quantiles(CLIENT_DURATION, VARS, qs=(0.95,)),
             "How long do 95% of outbound calls take at most?", width=8),
        Panel("Calls/s by server", "reqps", rates(CLIENT_COUNT, VARS, *SERVER),
              "Which dependencies does the service call, how often?"),
        Panel("Failed calls by server", "percentunit",
              ratios(CLIENT_COUNT, CLIENT_FAILURES, VARS, *SERVER),
              "Which dependency is failing?"),
        Panel("Call latency p50 / p95 / p99 by server", "s",
              quantiles(CLIENT_DURATION, VARS, *SERVER),
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
              "Is a process CPU-bound (near 100%), in user or system code, or blocked on disk "
              "I/O (wait: not CPU; Linux with delay accounting)?"),
        Panel("Memory", "bytes",
              gauges(PROCESS_MEMORY_USAGE, VARS, "instance", suffix="resident")
              + gauges(PROCESS_MEMORY_VIRTUAL, VARS, "instance", suffix="virtual"),
              "Is resident memory growing (a leak) or near the container limit?"),
        Panel("Resident memory by worker", "bytes",
              gauges(PROCESS_MEMORY_USAGE, VARS, "instance", "worker"),
              "Is one worker process leaking, or all of them?"),
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


def _renamed(model: dict[str, Any], names: Rewrite) -> dict[str, Any]:
    """A dashboard's JSON model with the names of another translation strategy."""
    for panel in model["panels"]:
        for target in panel.get("targets", ()):
            target["expr"] = names.query(target["expr"])
            target["legendFormat"] = names.legend(target["legendFormat"])
    for variable in model["templating"]["list"]:
        for key in ("query", "definition"):
            if isinstance(variable.get(key), str):
                variable[key] = names.variable(variable[key])
    return model


def render(strategy: str = DEFAULT) -> dict[str, str]:
    """File name -> dashboard JSON text, as committed under collector/grafana/dashboards/ (for
    the default translation strategy; another one's names with `strategy`)."""
    models = {d.uid: to_json(d) for d in DASHBOARDS}
    if strategy != DEFAULT:
        models = {uid: _renamed(model, rewrite(strategy)) for uid, model in models.items()}
    return {
        f"{uid}.json": json.dumps(model, indent=2, ensure_ascii=False) + "\n"
        for uid, model in models.items()
    }


def write(directory: Path, strategy: str = DEFAULT) -> list[Path]:
    return write_files(directory, render(strategy))
