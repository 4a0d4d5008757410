"""Runtime metrics with the metrics port open (its thread is one of the threads counted): real
process readings through the exposition, failing reads, and a forked worker's own readings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from otel_kit._instrumentation import runtime
from otel_kit._setup import MetricsHandle
from tests.exposition import series, value
from tests.handles import MakeHandle

pytestmark = pytest.mark.integration
FDS = "process_unix_file_descriptor_count"
THREADS = "process_thread_count"
RSS = "process_memory_usage_bytes"
GC = "cpython_gc_collections_total"
CPU = "process_cpu_time_seconds_total"


@pytest.fixture
def handle(make_handle: MakeHandle) -> MetricsHandle:
    return make_handle(prometheus_host="127.0.0.1", prometheus_port=0)


def scrape(handle: MetricsHandle) -> str:
    return handle.render().decode()


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


def test_failing_read_drops_only_its_series(
    handle: MetricsHandle,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """The process reading (CPU, memory, threads) and the descriptor count fail; GC stays."""
    if runtime.LINUX:  # /proc/self/stat and /proc/self/fd, pointed at nothing
        monkeypatch.setattr(runtime, "PROC_STAT", str(tmp_path / "stat"))
        monkeypatch.setattr(runtime, "PROC_FDS", str(tmp_path / "fd"))
    else:

        def denied(self: psutil.Process) -> None:
            raise psutil.AccessDenied(os.getpid())

        monkeypatch.setattr(psutil.Process, "memory_info", denied)
        monkeypatch.setattr(psutil.Process, "num_fds", denied)
    for _ in range(2):
        text = scrape(handle)
        for name in (RSS, "process_memory_virtual_bytes", FDS, THREADS, CPU):
            assert series(text, name) == []
        assert len(series(text, GC)) == 3
    assert (
        caplog.text.count("reading process.cpu.time, process.memory.usage") == 1
    )  # not per scrape
    assert caplog.text.count("reading process.unix.file_descriptor.count failed") == 1

    monkeypatch.undo()
    text = scrape(handle)  # recovers once the reads work again
    assert value(text, RSS) > 1_000_000 and value(text, FDS) > 0


FORK_SCRIPT = """
import os
from otel_kit import setup_metrics
from tests.exposition import value

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
