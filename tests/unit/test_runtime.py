"""Runtime metrics: real process readings through the exposition. With the metrics port's
thread, failing reads and a forked worker: tests/integration/test_runtime.py."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, Sum
from opentelemetry.sdk.resources import Resource

from otel_kit import catalogue
from otel_kit._instrumentation import runtime
from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._instruments import FastInstruments
from otel_kit._setup import MetricsHandle
from otel_kit.config import load_settings
from tests.exposition import series, value
from tests.handles import MakeHandle

FDS = "process_unix_file_descriptor_count"
THREADS = "process_thread_count"
RSS = "process_memory_usage_bytes"
GC = "cpython_gc_collections_total"
CPU = "process_cpu_time_seconds_total"
WAIT_REPORTED = hasattr(psutil.Process().cpu_times(), "iowait")  # Linux


@pytest.fixture
def handle(make_handle: MakeHandle) -> MetricsHandle:
    return make_handle()


def scrape(handle: MetricsHandle) -> str:
    return handle.render().decode()


@pytest.fixture
def gc_off() -> Iterator[None]:
    """No automatic collections, so explicit ones can be counted exactly."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def test_file_descriptors_follow_open_files(handle: MetricsHandle, tmp_path: Path) -> None:
    before = value(scrape(handle), FDS)
    with ExitStack() as stack:
        for i in range(7):
            stack.enter_context(open(tmp_path / f"f{i}", "w"))
        during = value(scrape(handle), FDS)
    after = value(scrape(handle), FDS)

    assert during - before == 7
    assert after == before


def test_thread_count_follows_threads(handle: MetricsHandle) -> None:
    # Idle worker threads of earlier tests may end meanwhile: retry a disturbed measurement.
    seen = []
    for _ in range(20):
        before = value(scrape(handle), THREADS)
        release = threading.Event()
        thread = threading.Thread(target=release.wait, args=(10,))
        thread.start()
        try:
            during = value(scrape(handle), THREADS)
        finally:
            release.set()
            thread.join(timeout=10)
        after = value(scrape(handle), THREADS)
        seen.append((before, during, after))
        if during - before == 1 and after == before:
            break
    else:
        pytest.fail(f"thread count did not follow one extra thread: {seen}")


def test_gc_collections_per_generation(handle: MetricsHandle, gc_off: None) -> None:
    text = scrape(handle)
    for _ in range(100):  # 100 two-list cycles: garbage only the collector can free
        a: list[object] = []
        b: list[object] = [a]
        a.append(b)
    del a, b
    gc.collect(0)
    gc.collect(0)
    gc.collect(1)
    later = scrape(handle)

    def delta(name: str, generation: str) -> float:
        return value(later, name, cpython_gc_generation=generation) - value(
            text, name, cpython_gc_generation=generation
        )

    assert delta(GC, "0") == 2
    assert delta(GC, "1") == 1
    assert delta(GC, "2") == 0
    assert delta("cpython_gc_collected_objects_total", "0") >= 200


@pytest.mark.skipif(not WAIT_REPORTED, reason="psutil reports I/O wait on Linux only")
def test_cpu_wait_only_where_the_kernel_counts_it(
    make_handle: MakeHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cpu.mode="wait" is psutil's iowait, left out while delay accounting is off (always 0
    then); the switch is read at each scrape. A copy of the sysctl file stands for it here:
    switching the machine's own one needs root."""
    switch = tmp_path / "task_delayacct"
    switch.write_text("0\n")
    monkeypatch.setattr(runtime, "DELAY_ACCOUNTING", str(switch))
    handle = make_handle()
    assert {s["cpu_mode"] for s in series(scrape(handle), CPU)} == {"user", "system"}
    switch.write_text("1\n")
    text = scrape(handle)
    assert {s["cpu_mode"] for s in series(text, CPU)} == {"user", "system", "wait"}
    assert 0 <= value(text, CPU, cpu_mode="wait") <= psutil.Process().cpu_times().iowait
    switch.unlink()  # a kernel before 5.14: no switch, counted
    assert {s["cpu_mode"] for s in series(scrape(handle), CPU)} == {"user", "system", "wait"}


def test_undo_stops_reporting() -> None:
    fast = FastInstruments("test")
    undo = runtime.instrument(IntegrationContext(load_settings(), MeterProvider(), fast))

    def points() -> dict[str, int]:
        return {
            metric.name: len(metric.data.data_points)
            for rm in fast.merge(None, Resource.create()).resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }

    assert points() == {
        "process.cpu.time": 3 if WAIT_REPORTED and runtime._io_wait_counted() else 2,
        "process.memory.usage": 1,
        "process.memory.virtual": 1,
        "process.unix.file_descriptor.count": 1,
        "process.thread.count": 1,
        "cpython.gc.collections": 3,
        "cpython.gc.collected_objects": 3,
        "cpython.gc.uncollectable_objects": 3,
    }
    undo()
    assert sum(points().values()) == 0


def test_exported_as_the_sdk_exported_them() -> None:
    """Under the scope of the SDK meter `otel_kit.runtime`, with the catalogue's names, units,
    descriptions and kinds (counters monotonic cumulative sums, the rest non-monotonic)."""
    fast = FastInstruments("test")
    runtime.instrument(IntegrationContext(load_settings(), MeterProvider(), fast))
    (resource_metrics,) = fast.merge(None, Resource.create()).resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    sdk_meter: Any = MeterProvider().get_meter("otel_kit.runtime")
    assert scope_metrics.scope == sdk_meter._instrumentation_scope
    assert len(scope_metrics.metrics) == 8
    specs = {v.name: v for v in vars(catalogue).values() if isinstance(v, catalogue.MetricSpec)}
    for metric in scope_metrics.metrics:
        spec = specs[metric.name]
        assert (metric.unit, metric.description) == (spec.unit, spec.description)
        assert isinstance(metric.data, Sum)
        assert metric.data.is_monotonic == (spec.kind == "counter")
        assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE


@pytest.mark.skipif(not runtime.LINUX, reason="/proc/self/stat is Linux's")
def test_proc_reading_agrees_with_psutil() -> None:
    """On Linux /proc/self/stat is read directly, elsewhere psutil: the same values. Each
    psutil reading lies between two /proc ones (retried: threads may come and go), memory
    within 1 MiB (psutil's 32 KiB read buffers are allocated while it reads)."""
    psutil_process = runtime.PsutilProcess()
    mib = 1 << 20

    def between(low: float, value: float, high: float, slack: float = 0) -> bool:
        return min(low, high) - slack <= value <= max(low, high) + slack

    mismatches: list[str] = []
    for _ in range(20):
        before, fds_before = runtime.read_proc_stat(), runtime.count_proc_fds()
        through_psutil, fds = psutil_process.read(), psutil_process.count_fds()
        after, fds_after = runtime.read_proc_stat(), runtime.count_proc_fds()
        mismatches = [
            field
            for field, slack in (
                ("user", 0),
                ("system", 0),
                ("threads", 0),
                ("rss", mib),
                ("vms", mib),
            )
            if not between(
                getattr(before, field), getattr(through_psutil, field), getattr(after, field), slack
            )
        ]
        if not between(fds_before, fds, fds_after):
            mismatches.append("fds")
        if not mismatches:
            break
    assert mismatches == [], (before, through_psutil, after)
    assert before.user > 0 and before.rss > 1_000_000 and before.vms >= before.rss
    if runtime._io_wait_counted():
        assert before.wait is not None and before.wait <= psutil.Process().cpu_times().iowait
    else:
        assert before.wait is None


def test_disabled_runtime_has_no_series(make_handle: MakeHandle) -> None:
    handle = make_handle(disabled_instrumentations="runtime")
    text = scrape(handle)
    assert series(text, RSS) == [] and series(text, GC) == []
