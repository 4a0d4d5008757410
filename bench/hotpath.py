"""Cost of one measurement: otel-kit's fast instruments vs the OTel SDK vs prometheus_client.

    .venv/bin/python bench/hotpath.py [--out bench/results]

Each case is timed with timeit (best of 5 repeats of 200,000 calls, pinned to one CPU when
taskset is available), minus the cost of calling an empty lambda. Writes hotpath.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import timeit
from collections.abc import Callable
from pathlib import Path

import prometheus_client
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_kit import catalogue
from otel_kit._instruments import FastInstruments

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


def measure(function: Callable[[], None]) -> float:
    return min(timeit.repeat(function, number=CALLS, repeat=REPEATS)) / CALLS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    empty = measure(lambda: None)
    results = {name: round(measure(f) - empty, 3) for name, f in cases().items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hotpath.json").write_text(json.dumps({"us_per_call": results}, indent=2) + "\n")
    lines = ["| measurement | µs per call |", "|---|---:|"]
    lines += [f"| {name} | {us:.2f} |" for name, us in results.items()]
    table = "\n".join(lines)
    (args.out / "hotpath.md").write_text("# Hot path: one measurement\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
