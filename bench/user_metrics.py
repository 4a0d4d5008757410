"""User metrics through the OTel API after `setup_metrics()`: otel-kit's meters (fast user
instruments, `otel_kit/_user_meter.py`), the plain SDK (the SDK meter of the same MeterProvider,
its views and readers, without otel-kit's routing) and prometheus_client.

    .venv/bin/python bench/user_metrics.py [--series 1000] [--rounds 15] [--out bench/results]

- Instructions per call (callgrind, what the neighbours do not move): one process under
  `valgrind --tool=callgrind`; per variant a warm-up, zero the counters, `CALLGRIND_CALLS` calls,
  dump; minus an empty loop's dump, over the calls.
- µs per call (wall clock): `--rounds` interleaved rounds of `CALLS` calls of every variant, each
  minus an empty loop in the same round; median of those per-round differences and its IQR.
- Bytes per series, tracemalloc: traced bytes after `--series` new series (one measurement each,
  then one scrape so the SDK's export state exists too), over the series.
- RSS per 1,000 series: a fresh subprocess per variant creates `RSS_SERIES` series (and
  scrapes), its resident set before and after, per 1,000 series.

Writes user_metrics.json/.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import timeit
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
CALLS = 20_000
CALLGRIND_CALLS = 5_000
RSS_SERIES = 20_000
ATTRS = {"method": "card"}

# what each variant's per-call loop calls; made by `Setup.calls()`
CALL_VARIANTS = (
    "otel-kit Counter.add",
    "otel-kit Histogram.record",
    "plain SDK Counter.add",
    "plain SDK Histogram.record",
    "prometheus_client Counter.labels().inc",
    "prometheus_client Histogram.labels().observe",
)
SERIES_VARIANTS = (
    "otel-kit counter",
    "otel-kit histogram",
    "plain SDK counter",
    "plain SDK histogram",
    "prometheus_client counter",
    "prometheus_client histogram",
)


class Setup:
    """otel-kit set up once, its meter and the plain SDK meter of the same provider, and a
    prometheus_client registry, with a counter and a histogram each."""

    def __init__(self) -> None:
        import prometheus_client
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
        from starlette.applications import Starlette

        from otel_kit import setup_metrics

        self.handle = setup_metrics(Starlette(), disabled_instrumentations=("runtime",))
        fast = metrics.get_meter("bench")
        sdk = SDKMeterProvider.get_meter(self.handle.meter_provider, "bench-sdk")
        self.counters = {
            "otel-kit": fast.create_counter("bench.orders", unit="{order}"),
            "plain SDK": sdk.create_counter("bench.orders", unit="{order}"),
        }
        self.histograms = {
            "otel-kit": fast.create_histogram("bench.total", unit="s"),
            "plain SDK": sdk.create_histogram("bench.total", unit="s"),
        }
        self.registry = prometheus_client.CollectorRegistry()
        self.p_counter = prometheus_client.Counter(
            "p_orders", "", ["method"], registry=self.registry
        )
        self.p_histogram = prometheus_client.Histogram(
            "p_total", "", ["method"], registry=self.registry
        )

    def calls(self) -> dict[str, Callable[[], None]]:
        counter, histogram = self.counters, self.histograms
        p_counter, p_histogram = self.p_counter, self.p_histogram
        fast_c, sdk_c = counter["otel-kit"], counter["plain SDK"]
        fast_h, sdk_h = histogram["otel-kit"], histogram["plain SDK"]
        return {
            "otel-kit Counter.add": lambda: fast_c.add(1, ATTRS),
            "otel-kit Histogram.record": lambda: fast_h.record(0.01, ATTRS),
            "plain SDK Counter.add": lambda: sdk_c.add(1, ATTRS),
            "plain SDK Histogram.record": lambda: sdk_h.record(0.01, ATTRS),
            "prometheus_client Counter.labels().inc": lambda: p_counter.labels("card").inc(),
            "prometheus_client Histogram.labels().observe": (
                lambda: p_histogram.labels("card").observe(0.01)
            ),
        }

    def series(self, variant: str) -> tuple[Callable[[int], None], Callable[[], Any]]:
        """(make series i, collect) for a SERIES_VARIANTS entry."""
        if variant.startswith("prometheus_client"):
            if variant.endswith("counter"):
                return (lambda i: self.p_counter.labels(f"c{i}").inc()), self._p_collect
            return (lambda i: self.p_histogram.labels(f"h{i}").observe(0.01)), self._p_collect
        source = variant.rsplit(" ", 1)[0]
        if variant.endswith("counter"):
            counter = self.counters[source]
            return (lambda i: counter.add(1, {"method": f"c{i}"})), self.handle.render
        histogram = self.histograms[source]
        return (lambda i: histogram.record(0.01, {"method": f"h{i}"})), self.handle.render

    def _p_collect(self) -> Any:
        return list(self.registry.collect())


def _quartiles(values: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return {"median": median, "iqr": q3 - q1}


def wall(setup: Setup, rounds: int) -> dict[str, dict[str, float]]:
    calls = setup.calls()
    diffs: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            empty = timeit.timeit(lambda: None, number=CALLS)
            diffs[name].append((timeit.timeit(call, number=CALLS) - empty) / CALLS * 1e6)
    return {name: _quartiles(values) for name, values in diffs.items()}


def per_series(setup: Setup, variant: str, series: int) -> float:
    make, collect = setup.series(variant)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(series):
        make(i)
    collect()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / series


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- children ---------------------------------------------------------------------------------


def rss_child(variant: str) -> None:
    setup = Setup()
    make, collect = setup.series(variant)
    make(-1)
    collect()  # the instrument and the export path exist: only series are added below
    gc.collect()
    before = _rss()
    for i in range(RSS_SERIES):
        make(i)
    collect()
    gc.collect()
    print(json.dumps({"per_1000": (_rss() - before) / RSS_SERIES * 1000}))


def callgrind_child() -> None:
    """Inside callgrind: per variant (and an empty loop) warm up, zero, run, dump."""
    setup = Setup()
    calls: dict[str, Callable[[], None]] = {"empty": lambda: None, **setup.calls()}
    pid = str(os.getpid())
    for index, call in enumerate(calls.values()):
        for _ in range(500):
            call()
        subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        for _ in range(CALLGRIND_CALLS):
            call()
        subprocess.run(["callgrind_control", "-d", f"v{index}", pid], check=True)
    print(json.dumps(list(calls)))


# --- the parent -------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BENCH_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def rss(variant: str) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--rss-child", variant],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    return float(json.loads(done.stdout.splitlines()[-1])["per_1000"])


def instructions() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/cg.%p",
                sys.executable,
                __file__,
                "--callgrind-child",
            ],
            capture_output=True,
            text=True,
            env=_env(),
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"callgrind run failed:\n{done.stderr[-4000:]}")
        names = json.loads(done.stdout.splitlines()[-1])
        totals: dict[str, int] = {}
        for path in Path(tmp).glob("cg.*"):
            text = path.read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: .*dump v(\d+)", text, re.MULTILINE)
            summary = re.search(r"^summary: (\d+)", text, re.MULTILINE)
            if trigger and summary:
                totals[names[int(trigger[1])]] = int(summary[1])
    empty = totals.pop("empty")
    return {name: (total - empty) / CALLGRIND_CALLS for name, total in totals.items()}


def render(result: dict[str, Any]) -> str:
    calls, series = result["instructions_per_call"], result["series"]

    def counted(name: str) -> str:
        return f"{calls[name]:,.0f}" if calls else "not measured"

    wall_us = result["us_per_call"]
    lines = [
        "# User metrics through the OTel API: otel-kit, the plain SDK, prometheus_client",
        "",
        "Generated by `bench/user_metrics.py`. otel-kit: `metrics.get_meter(...)` after "
        "`setup_metrics()` (fast user instruments); plain SDK: the SDK meter of the same "
        "MeterProvider (its views, readers and exemplar filter, no routing); attributes "
        '`{"method": "card"}` on an existing series, no span.',
        "",
        f"Wall clock on a busy shared machine (load {result['load']}): {result['rounds']} "
        f"interleaved rounds of {CALLS:,} calls, each minus an empty loop of the same round; "
        "median and IQR of those differences. Noisy; the instruction counts are the stable "
        "measure.",
        "",
        "| measurement | instructions per call (callgrind) | µs per call, median | IQR |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {counted(name)} | {wall_us[name]['median']:.2f} | "
            f"{wall_us[name]['iqr']:.2f} |"
            for name in CALL_VARIANTS
        ),
        "",
        f"| memory per series | bytes (tracemalloc, {series:,} series) | "
        f"RSS per 1,000 series ({RSS_SERIES:,} in a fresh process) |",
        "|---|---:|---:|",
        *(
            f"| {name} | {result['bytes_per_series'][name]:,.0f} | "
            f"{result['rss_per_1000_series'][name] / 1024:,.0f} kB |"
            for name in SERIES_VARIANTS
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child)
    if args.callgrind_child:
        return callgrind_child()

    setup = Setup()
    result: dict[str, Any] = {
        "series": args.series,
        "rounds": args.rounds,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "instructions_per_call": {},
        "us_per_call": wall(setup, args.rounds),
        "bytes_per_series": {v: per_series(setup, v, args.series) for v in SERIES_VARIANTS},
        "rss_per_1000_series": {v: rss(v) for v in SERIES_VARIANTS},
    }
    setup.handle.shutdown()
    write(result, args.out)  # the wall-clock and memory numbers, in case callgrind is stopped
    if not args.no_callgrind:
        result["instructions_per_call"] = instructions()
        write(result, args.out)


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "user_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    (out / "user_metrics.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
