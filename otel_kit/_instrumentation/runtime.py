"""Process and CPython runtime metrics, read at collection time (`/proc` or psutil, and `gc`).

Names follow the OTel semantic conventions (process and CPython runtime metrics):

| OTel instrument (unit) | Prometheus series | attributes |
|---|---|---|
| `process.cpu.time` counter (s) | `process_cpu_time_seconds_total` | `cpu.mode` user/system/wait |
| `process.memory.usage` updowncounter (By), RSS | `process_memory_usage_bytes` | |
| `process.memory.virtual` updowncounter (By) | `process_memory_virtual_bytes` | |
| `process.unix.file_descriptor.count` (Unix) | `process_unix_file_descriptor_count` | |
| `process.thread.count` updowncounter | `process_thread_count` | |
| `cpython.gc.collections` counter | `cpython_gc_collections_total` | `cpython.gc.generation` |
| `cpython.gc.collected_objects` counter | `cpython_gc_collected_objects_total` | as above |
| `cpython.gc.uncollectable_objects` counter | `cpython_gc_uncollectable_objects_total` | as above |

`cpu.mode="wait"`: time blocked on disk I/O, on Linux only when the kernel counts it (delay
accounting, `kernel.task_delayacct`, off by default since Linux 5.14): otherwise the kernel's
count is always 0, no measurement, and that series is left out.

Nothing is measured between scrapes: each collection reads the current values, each source
once: on Linux one read of `/proc/self/stat` (CPU times, threads, memory: what psutil reads
from `stat`, `statm` and `status`) and one listing of `/proc/self/fd`; elsewhere psutil, under
one `oneshot()`; `gc.get_stats()` once for the three GC metrics. A failing read (an error, an
exotic platform) drops the series it gives from that scrape. Every collection reads the
process it runs in (psutil's process is looked up again after a fork), so pre-forking
servers report each worker.

The points are built here and exported at merge time under the `otel_kit.runtime` scope
(`FastInstruments.observe`), as the SDK's observable instruments exported them: through the
SDK each of the 15 points cost ~100k instructions of callbacks, measurements and aggregation.
Undo makes the collection report nothing.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import psutil
from opentelemetry.sdk.metrics.export import Metric
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._otel_data import number_metric, number_point
from otel_kit._support import LogOnce
from otel_kit.catalogue import MetricSpec

__all__ = ["instrument"]

# The scope the SDK meter `get_meter("otel_kit.runtime")` exported them under (no version).
SCOPE = InstrumentationScope("otel_kit.runtime")
# Read at each collection (module globals, so a test can point them elsewhere): the sysctl can
# be switched while the process runs.
DELAY_ACCOUNTING = "/proc/sys/kernel/task_delayacct"
PROC_STAT = "/proc/self/stat"
PROC_FDS = "/proc/self/fd"
LINUX = sys.platform.startswith("linux")

_GC_STATS = (
    (catalogue.CPYTHON_GC_COLLECTIONS, "collections"),
    (catalogue.CPYTHON_GC_COLLECTED_OBJECTS, "collected"),
    (catalogue.CPYTHON_GC_UNCOLLECTABLE_OBJECTS, "uncollectable"),
)
_FROM_STAT = "process.cpu.time, process.memory.usage, process.memory.virtual, process.thread.count"
Points = list[tuple[dict[str, Any], float]]  # attributes and value of each point of a metric


class ProcessReading(NamedTuple):
    """One reading of the process: CPU seconds (`wait` None: not counted), threads, bytes."""

    user: float
    system: float
    wait: float | None
    threads: int
    rss: int
    vms: int


def _read(path: str) -> bytes:
    """A small /proc file in one read (os-level: no Python file object per collection)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _io_wait_counted() -> bool:
    try:
        return _read(DELAY_ACCOUNTING).strip() != b"0"
    except OSError:  # kernels before 5.14 have no switch: counted unless booted nodelayacct
        return True


if LINUX:
    _TICKS = os.sysconf("SC_CLK_TCK")
    _PAGE = os.sysconf("SC_PAGE_SIZE")


def read_proc_stat() -> ProcessReading:
    """Linux: `/proc/self/stat` once, the fields psutil reads (proc(5) numbers them from 1;
    here from the state, the first after the command name, which may hold spaces and ')')."""
    fields = _read(PROC_STAT).rpartition(b")")[2].split()
    wait = int(fields[39]) / _TICKS if _io_wait_counted() else None  # delayacct_blkio_ticks
    return ProcessReading(
        user=int(fields[11]) / _TICKS,  # utime
        system=int(fields[12]) / _TICKS,  # stime
        wait=wait,
        threads=int(fields[17]),  # num_threads
        rss=int(fields[21]) * _PAGE,  # rss, in pages
        vms=int(fields[20]),  # vsize, in bytes
    )


def count_proc_fds() -> int:
    return len(os.listdir(PROC_FDS))  # psutil's num_fds on Linux


class PsutilProcess:
    """Elsewhere: psutil, the process looked up again after a fork."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._process = psutil.Process(self._pid)

    def process(self) -> psutil.Process:
        pid = os.getpid()
        if pid != self._pid:  # forked since setup
            self._pid, self._process = pid, psutil.Process(pid)
        return self._process

    def read(self) -> ProcessReading:
        process = self.process()
        with process.oneshot():
            times, memory = process.cpu_times(), process.memory_info()
            threads = process.num_threads()
        # psutil counts I/O wait on Linux only, where /proc is read instead
        return ProcessReading(times.user, times.system, None, threads, memory.rss, memory.vms)

    def count_fds(self) -> int:
        return int(self.process().num_fds())


class _Runtime:
    def __init__(
        self, read_process: Callable[[], ProcessReading], count_fds: Callable[[], int] | None
    ) -> None:
        self.active = True
        self._read_process = read_process
        self._count_fds = count_fds  # None: no file descriptors here (Windows)
        self._failed = LogOnce()  # one warning per source, not one per scrape

    def _attempt(self, what: str, read: Callable[[], Any]) -> Any:
        """`read()`, or None when it fails: one failing read must not cost the others or the
        scrape."""
        try:
            return read()
        except Exception:
            message = "otel-kit: reading %s failed; it is left out"
            self._failed(what, logging.WARNING, message, what, exc_info=True)
            return None

    def collect(self, start: int, now: int) -> list[Metric]:
        """This collection's metrics, in the order the SDK exported them."""
        if not self.active:
            return []
        observed: list[tuple[MetricSpec, Points]] = []
        process: ProcessReading | None = self._attempt(_FROM_STAT, self._read_process)
        if process is not None:
            cpu: Points = [({"cpu.mode": "user"}, process.user)]
            cpu.append(({"cpu.mode": "system"}, process.system))
            if process.wait is not None:
                cpu.append(({"cpu.mode": "wait"}, process.wait))
            observed += [
                (catalogue.PROCESS_CPU_TIME, cpu),
                (catalogue.PROCESS_MEMORY_USAGE, [({}, process.rss)]),
                (catalogue.PROCESS_MEMORY_VIRTUAL, [({}, process.vms)]),
                (catalogue.PROCESS_THREAD_COUNT, [({}, process.threads)]),
            ]
        stats = self._attempt("cpython.gc", gc.get_stats)
        if stats is not None:
            for spec, key in _GC_STATS:
                points = [({"cpython.gc.generation": g}, s[key]) for g, s in enumerate(stats)]
                observed.append((spec, points))
        if self._count_fds is not None:
            spec = catalogue.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT
            fds: int | None = self._attempt(spec.name, self._count_fds)
            if fds is not None:
                observed.append((spec, [({}, fds)]))
        return [_metric(spec, points, start, now) for spec, points in observed]


def _metric(spec: MetricSpec, points: Points, start: int, now: int) -> Metric:
    kind = "counter" if spec.kind == "counter" else "updown"
    made = [number_point(attributes, start, now, value) for attributes, value in points]
    return number_metric(spec.name, spec.description, spec.unit, made, kind)


def _sources() -> tuple[Callable[[], ProcessReading], Callable[[], int] | None]:
    if LINUX:
        return read_proc_stat, count_proc_fds
    process = PsutilProcess()
    return process.read, process.count_fds if hasattr(psutil.Process, "num_fds") else None


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Export the runtime metrics at each collection; returns the undo (they stop)."""
    runtime = _Runtime(*_sources())
    integration.fast.observe(SCOPE, runtime.collect)

    def undo() -> None:
        runtime.active = False

    return undo
