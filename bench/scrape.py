"""Scrape cost: otel-kit's /metrics render vs prometheus_client's own generate_latest, and memory.

    .venv/bin/python bench/scrape.py [--out bench/results]

For 1,000 and 10,000 series of one counter (labels route and status), the same data is held by
otel-kit (OTel SDK counter, rendered through otel-kit's Prometheus export) and by a
prometheus_client Counter (rendered by `generate_latest`). Reports median render time, bytes,
and the memory each library holds per series (tracemalloc). Writes scrape.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client

from otel_kit import setup_metrics

SIZES = (1_000, 10_000)
REPEATS = 9


def labels(i: int) -> tuple[str, str]:
    return f"/route/{i % 1000}", str(200 + i // 1000)


def timed(render: Callable[[], bytes]) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        size = len(render())
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, size


def measure(n: int) -> dict[str, Any]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter(
        "bench_requests", "x", ["route", "status"], registry=registry
    )
    for i in range(n):
        counter.labels(*labels(i)).inc()
    pc_bytes = tracemalloc.get_traced_memory()[0] - before

    before = tracemalloc.get_traced_memory()[0]
    handle = setup_metrics(
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        disabled_instrumentations="runtime,sqlalchemy,redis,httpx",
        cardinality_limit=n + 10,
    )
    # The handle's own provider: the global one can be set only once per process.
    otel = handle.meter_provider.get_meter("bench").create_counter("bench.requests")
    for i in range(n):
        route, status = labels(i)
        otel.add(1, {"route": route, "status": status})
    kit_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    kit_ms, kit_size = timed(handle.render)
    pc_ms, pc_size = timed(lambda: prometheus_client.generate_latest(registry))
    handle.shutdown()
    return {
        "series": n,
        "otel_kit_render_ms": round(kit_ms, 2),
        "prometheus_client_render_ms": round(pc_ms, 2),
        "render_ratio": round(kit_ms / pc_ms, 2),
        "otel_kit_bytes": kit_size,
        "prometheus_client_bytes": pc_size,
        "otel_kit_memory_per_series_bytes": kit_bytes // n,
        "prometheus_client_memory_per_series_bytes": pc_bytes // n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    rows = [measure(n) for n in SIZES]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scrape.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| series | otel-kit render | prometheus_client generate_latest | ratio "
        "| bytes (otel-kit / prometheus_client) "
        "| memory per series (otel-kit / prometheus_client) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['series']:,} | {r['otel_kit_render_ms']} ms "
            f"| {r['prometheus_client_render_ms']} ms "
            f"| {r['render_ratio']} | {r['otel_kit_bytes']:,} / {r['prometheus_client_bytes']:,} "
            f"| {r['otel_kit_memory_per_series_bytes']} B / "
            f"{r['prometheus_client_memory_per_series_bytes']} B |"
        )
    table = "\n".join(lines)
    note = (
        "prometheus_client's counters also emit a `_created` sample per series; otel-kit's do "
        "not, hence fewer bytes.\n"
    )
    (args.out / "scrape.md").write_text("# Scrape cost\n\n" + table + "\n\n" + note)
    print(table)


if __name__ == "__main__":
    main()
