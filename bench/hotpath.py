"""Cost of one measurement: otel-kit's fast instruments vs the OTel SDK vs prometheus_client.

    .venv/bin/python bench/hotpath.py [--out bench/results]

Each case is timed with timeit (best of 5 repeats of 200,000 calls, pinned to one CPU when
taskset is available), minus the cost of calling an empty lambda. Then what each outbound HTTP
integration adds to one call: its wrapped method around a stub transport, bare and instrumented;
the same for one statement of each database driver integration (asyncpg, psycopg) around a stub
of the driver's method. Exemplars (issue 16): one histogram record before exemplars existed
(its code at that commit), with the default trace_based filter and no span, with always_off,
and inside a sampled span of an SDK TracerProvider, against the SDK histogram with its own
exemplar reservoir without and with that span, in interleaved rounds. Writes hotpath.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import timeit
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from otel_kit import catalogue
from otel_kit._instruments import FastHistogram, FastInstruments, Key

CALLS = 200_000
REPEATS = 5


def cases() -> dict[str, Callable[[], None]]:
    fast = FastInstruments("bench")
    histogram = fast.histogram(
        catalogue.HTTP_SERVER_REQUEST_DURATION, catalogue.DEFAULT_DURATION_BUCKETS, 2000
    )
    active = fast.sum(catalogue.HTTP_SERVER_ACTIVE_REQUESTS, 2000)
    key = ("GET", "/items/{item_id}", 200, None, "http", "1.1")

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    sdk_histogram = meter.create_histogram("http.server.request.duration", unit="s")
    sdk_counter = meter.create_counter("requests")
    sdk_updown = meter.create_up_down_counter("http.server.active_requests")
    attributes: dict[str, str | int] = {
        "http.request.method": "GET",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
    }

    registry = prometheus_client.CollectorRegistry()
    pc_histogram = prometheus_client.Histogram(
        "d", "d", ["method", "route", "status"], registry=registry
    )
    pc_counter = prometheus_client.Counter(
        "c", "c", ["method", "route", "status"], registry=registry
    )
    return {
        "otel-kit FastHistogram.record": lambda: histogram.record(0.0012, key),
        "otel-kit FastSum.add": lambda: active.add(1, ("GET", "http")),
        "OTel SDK Histogram.record": lambda: sdk_histogram.record(0.0012, attributes),
        "OTel SDK Counter.add": lambda: sdk_counter.add(1, attributes),
        "OTel SDK UpDownCounter.add": lambda: sdk_updown.add(1, {"http.request.method": "GET"}),
        "prometheus_client Histogram.labels().observe": lambda: pc_histogram.labels(
            "GET", "/items/{item_id}", "200"
        ).observe(0.0012),
        "prometheus_client Counter.labels().inc": lambda: pc_counter.labels(
            "GET", "/items/{item_id}", "200"
        ).inc(),
    }


class _BeforeExemplars(FastHistogram):
    """FastHistogram.record as it was before exemplars (a8f9f8f^): the baseline of their cost."""

    def record(self, value: float, key: Key, span: object = None) -> None:
        series = self._series.get(key) or self._new(key)
        index = bisect_left(self.bounds, value)
        with self._lock:
            series.counts[index] += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value


def exemplar_cases() -> dict[str, dict[str, Callable[[], None]]]:
    """{"no span": cases, "sampled span": cases}: the second set is timed inside a span."""
    spec, bounds = catalogue.HTTP_SERVER_REQUEST_DURATION, catalogue.DEFAULT_DURATION_BUCKETS
    key = ("GET", "/items/{item_id}", 200, None, "http", "1.1")
    before = _BeforeExemplars(spec, bounds, 2000)
    trace_based = FastHistogram(spec, bounds, 2000, "trace_based")
    off = FastHistogram(spec, bounds, 2000, "always_off")
    # The SDK's own reservoir: trace_based filter, one exemplar per bucket (its default).
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    sdk = meter.create_histogram("http.server.request.duration", unit="s")
    attributes = {"http.request.method": "GET", "http.route": "/items/{item_id}"}
    value = 0.0012
    no_span = {
        "otel-kit FastHistogram.record, before exemplars": lambda: before.record(value, key),
        "otel-kit FastHistogram.record, trace_based, no span": lambda: trace_based.record(
            value, key
        ),
        "otel-kit FastHistogram.record, always_off": lambda: off.record(value, key),
        "OTel SDK Histogram.record, trace_based, no span": lambda: sdk.record(value, attributes),
    }
    in_span = {
        "otel-kit FastHistogram.record, trace_based, sampled span": lambda: trace_based.record(
            value, key
        ),
        "OTel SDK Histogram.record, trace_based, sampled span": lambda: sdk.record(
            value, attributes
        ),
    }
    return {"no span": no_span, "sampled span": in_span}


def exemplars(empty: float, rounds: int = 40) -> dict[str, float]:
    """µs per record of each exemplar case, the sampled-span ones inside a real SDK span.

    The cases take turns, `rounds` times CALLS // 20 calls each, best round kept: differences
    of a tenth of a µs survive other processes sharing the core (they slow every case alike).
    """
    sets = exemplar_cases()
    tracer = TracerProvider().get_tracer("bench")  # the default sampler samples every root span
    span = tracer.start_span("request")
    assert span.get_span_context().trace_flags.sampled
    calls, best = CALLS // 20, dict.fromkeys([*sets["no span"], *sets["sampled span"]], 1e9)
    for _ in range(rounds):
        for name, function in sets["no span"].items():
            best[name] = min(best[name], timeit.timeit(function, number=calls))
        with trace.use_span(span):
            for name, function in sets["sampled span"].items():
                best[name] = min(best[name], timeit.timeit(function, number=calls))
    span.end()
    return {name: round(seconds / calls * 1e6 - empty, 3) for name, seconds in best.items()}


def measure(function: Callable[[], None]) -> float:
    return min(timeit.repeat(function, number=CALLS, repeat=REPEATS)) / CALLS * 1e6


class _StubResponse:
    """What the outbound recorders read of a response (urllib3's and aiohttp's)."""

    def __init__(self, version: object) -> None:
        self.status = 200
        self.version = version


def bare_and_instrumented(
    stubs: dict[tuple[type, str], Callable[..., Any]], each: Callable[[], dict[str, float]]
) -> dict[str, tuple[float, float]]:
    """`each()`'s µs per call with `stubs` in place of the libraries' methods, bare and then
    under a setup (which wraps the stubs); the methods are put back afterwards."""
    from otel_kit import MetricsHandle

    originals = {target: target[0].__dict__[target[1]] for target in stubs}
    try:
        for (owner, name), stub in stubs.items():
            setattr(owner, name, stub)
        bare = each()
        handle = MetricsHandle.create(metrics_exporter="none")
        try:
            instrumented = each()
        finally:
            handle.shutdown()
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
    return {name: (bare[name], instrumented[name]) for name in bare}


def outbound() -> dict[str, tuple[float, float]]:
    """(bare, instrumented) µs per call of each outbound integration's wrapped method around a
    stub that returns a response at once: what otel-kit adds to one request, without the
    network. requests goes through urllib3's wrapper (the same cost)."""
    import asyncio

    import aiohttp
    import httpx
    import urllib3

    url = "http://127.0.0.1:8080/items/1?q=2"
    pool = urllib3.HTTPConnectionPool("127.0.0.1", 8080)
    transport = httpx.HTTPTransport()
    request = httpx.Request("GET", url)
    response = httpx.Response(200, extensions={"http_version": b"HTTP/1.1"})
    urllib3_response, aiohttp_response = _StubResponse(11), _StubResponse((1, 1))  # HTTP/1.1

    async def stub_request(self: object, method: str, url: object, **kwargs: object) -> object:
        return aiohttp_response

    stubs = {
        (urllib3.HTTPConnectionPool, "_make_request"): lambda self, *a, **k: urllib3_response,
        (httpx.HTTPTransport, "handle_request"): lambda self, request: response,
        (aiohttp.ClientSession, "_request"): stub_request,
    }

    async def aiohttp_calls(session: aiohttp.ClientSession, calls: int) -> float:
        start = timeit.default_timer()
        for _ in range(calls):
            await session._request("GET", url)
        return timeit.default_timer() - start

    async def aiohttp_us() -> float:
        async with aiohttp.ClientSession() as session:
            calls = CALLS // 4
            return min([await aiohttp_calls(session, calls) for _ in range(REPEATS)]) / calls * 1e6

    def each() -> dict[str, float]:
        return {
            "urllib3 (and requests)": measure(lambda: pool._make_request(None, "GET", "/items/1")),
            "httpx": measure(lambda: transport.handle_request(request)),
            "aiohttp": asyncio.run(aiohttp_us()),
        }

    try:
        return bare_and_instrumented(stubs, each)
    finally:
        transport.close()


def databases() -> dict[str, tuple[float, float]]:
    """(bare, instrumented) µs per statement of each DB driver integration's wrapped method
    around a stub that returns at once on a stand-in connection: what otel-kit adds to one
    statement, without the server (a round trip to PostgreSQL on loopback is ~50-100 µs)."""
    import asyncio
    from types import SimpleNamespace

    import asyncpg
    import psycopg

    async def fetchval(self: object, query: str, *args: object, **kwargs: object) -> object:
        return 1

    def execute(self: object, query: str, params: object = None, **kwargs: object) -> object:
        return self

    stubs = {(asyncpg.Connection, "fetchval"): fetchval, (psycopg.Cursor, "execute"): execute}
    query = "SELECT name FROM items WHERE id = $1"
    # What the wrappers read of a connection: asyncpg's address and parameters, psycopg's info.
    asyncpg_connection = SimpleNamespace(
        _addr=("127.0.0.1", 5432), _params=SimpleNamespace(database="shop")
    )
    psycopg_connection = SimpleNamespace(
        info=SimpleNamespace(host="127.0.0.1", port=5432, dbname="shop")
    )
    cursor = SimpleNamespace(connection=psycopg_connection)

    async def asyncpg_us() -> float:
        calls, times = CALLS // 4, []
        for _ in range(REPEATS):
            start = timeit.default_timer()
            for _ in range(calls):
                await asyncpg.Connection.fetchval(asyncpg_connection, query, 1)
            times.append(timeit.default_timer() - start)
        return min(times) / calls * 1e6

    def each() -> dict[str, float]:
        return {
            "asyncpg Connection.fetchval": asyncio.run(asyncpg_us()),
            "psycopg Cursor.execute": measure(lambda: psycopg.Cursor.execute(cursor, query, (1,))),
        }

    return bare_and_instrumented(stubs, each)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    empty = measure(lambda: None)
    results = {name: round(measure(f) - empty, 3) for name, f in cases().items()}
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| measurement | µs per call |", "|---|---:|"]
    lines += [f"| {name} | {us:.2f} |" for name, us in results.items()]
    table = "\n".join(lines)
    cost = exemplars(empty)
    before = cost["otel-kit FastHistogram.record, before exemplars"]
    rows = ["| histogram record, exemplars | µs per call | over before exemplars µs |"]
    rows += ["|---|---:|---:|"]
    rows += [f"| {n} | {us:.2f} | {us - before:+.2f} |" for n, us in cost.items()]
    table += "\n\n" + "\n".join(rows)
    calls = outbound()
    rows = ["| outbound call (stub transport) | bare µs | instrumented µs | added µs |"]
    rows += ["|---|---:|---:|---:|"]
    rows += [f"| {n} | {b:.2f} | {i:.2f} | {i - b:.2f} |" for n, (b, i) in calls.items()]
    table += "\n\n" + "\n".join(rows)
    statements = databases()
    rows = ["| DB statement (stub driver) | bare µs | instrumented µs | added µs |"]
    rows += ["|---|---:|---:|---:|"]
    rows += [f"| {n} | {b:.2f} | {i:.2f} | {i - b:.2f} |" for n, (b, i) in statements.items()]
    table += "\n\n" + "\n".join(rows)
    json_results = {
        "us_per_call": results,
        "exemplars_us_per_call": cost,
        "outbound_us_bare_instrumented": calls,
        "db_statement_us_bare_instrumented": statements,
    }
    (args.out / "hotpath.json").write_text(json.dumps(json_results, indent=2) + "\n")
    (args.out / "hotpath.md").write_text("# Hot path: one measurement\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
