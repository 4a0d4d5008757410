"""Runtime metrics: real process readings through the exposition, and failing reads."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_kit import setup_metrics
from otel_kit._instrumentation import IntegrationContext, runtime
from otel_kit._instruments import FastInstruments
from otel_kit._setup import MetricsHandle
from otel_kit.config import load_settings
from tests.conftest import series, value

FDS = "process_unix_file_descriptor_count"
THREADS = "process_thread_count"
RSS = "process_memory_usage_bytes"
GC = "cpython_gc_collections_total"


@pytest.fixture
def handle() -> MetricsHandle:
    return setup_metrics(prometheus_host="127.0.0.1", prometheus_port=0)


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


def test_series_and_plausible_values(handle: MetricsHandle) -> None:
    process = psutil.Process()
    cpu_before = process.cpu_times()
    text = scrape(handle)
    rss = process.memory_info().rss
    cpu_after = process.cpu_times()

    assert value(text, RSS) > 1_000_000
    assert abs(value(text, RSS) - rss) <= 0.2 * rss
    assert value(text, "process_memory_virtual_bytes") >= value(text, RSS)
    for mode in ("user", "system"):
        cpu = value(text, "process_cpu_time_seconds_total", cpu_mode=mode)
        assert getattr(cpu_before, mode) <= cpu <= getattr(cpu_after, mode)
    assert value(text, "process_cpu_time_seconds_total", cpu_mode="user") > 0
    assert value(text, THREADS) == process.num_threads() >= 2  # main + metrics port
    assert value(text, FDS) == process.num_fds()
    for name in (
        GC,
        "cpython_gc_collected_objects_total",
        "cpython_gc_uncollectable_objects_total",
    ):
        assert sorted(labels["cpython_gc_generation"] for labels in series(text, name)) == [
            "0",
            "1",
            "2",
        ]
    assert "# TYPE process_cpu_time_seconds_total counter" in text
    assert "# TYPE process_memory_usage_bytes gauge" in text
    assert "# TYPE cpython_gc_collections_total counter" in text


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
    for _ in range(5):
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


def test_failing_psutil_read_drops_only_that_series(
    handle: MetricsHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def denied(self: psutil.Process) -> None:
        raise psutil.AccessDenied(os.getpid())

    monkeypatch.setattr(psutil.Process, "memory_info", denied)
    monkeypatch.setattr(psutil.Process, "num_fds", denied)
    for _ in range(2):
        text = scrape(handle)
        assert series(text, RSS) == []
        assert series(text, "process_memory_virtual_bytes") == []
        assert series(text, FDS) == []
        assert value(text, THREADS) >= 2
        assert value(text, "process_cpu_time_seconds_total", cpu_mode="user") > 0
        assert len(series(text, GC)) == 3
    assert caplog.text.count("reading process.memory.usage failed") == 1  # once, not per scrape

    monkeypatch.undo()
    assert value(scrape(handle), RSS) > 1_000_000  # recovers once the reads work again


def test_undo_stops_reporting() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    undo = runtime.instrument(
        IntegrationContext(load_settings(), provider, FastInstruments("test"))
    )

    def points() -> dict[str, int]:
        data = reader.get_metrics_data()
        if data is None:  # the SDK exports nothing when no callback observed anything
            return {}
        return {
            metric.name: len(metric.data.data_points)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }

    assert points() == {
        "process.cpu.time": 2,
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
    provider.shutdown()


FORK_SCRIPT = """
import os
from otel_kit import setup_metrics
from tests.conftest import value

import threading
handle = setup_metrics(prometheus_host="127.0.0.1", prometheus_port=0)
stop = threading.Event()
for _ in range(5):  # the parent: main thread, metrics port and these 5
    threading.Thread(target=stop.wait, daemon=True).start()
handle.render()  # the parent has read its own process before the fork
pid = os.fork()
if pid == 0:
    text = handle.render().decode()
    print(value(text, "process_thread_count"), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(value(handle.render().decode(), "process_thread_count"))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_worker_reports_itself() -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    child, parent = result.stdout.split()
    # The child has only the forking thread (a runtime helper thread may appear): it reports
    # itself, not the parent it was forked from.
    assert float(child) <= 2
    assert float(parent) >= 7


def test_disabled_runtime_has_no_series() -> None:
    handle = setup_metrics(
        prometheus_host="127.0.0.1", prometheus_port=0, disabled_instrumentations="runtime"
    )
    text = scrape(handle)
    assert series(text, RSS) == [] and series(text, GC) == []
