"""Process and CPython runtime metrics, read at collection time (psutil and `gc`).

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
accounting, `kernel.task_delayacct`, off by default since Linux 5.14): otherwise psutil's
iowait is always 0, no measurement, and that series is left out.

Nothing is measured between scrapes: each callback reads the current value when the reader
collects. A failing read (psutil error, exotic platform) drops that one series from that scrape.
The process is looked up again after a fork, so pre-forking servers report each worker.
The SDK cannot remove observable instruments, so undo makes the callbacks report nothing.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterable

import psutil
from opentelemetry.metrics import CallbackOptions, Observation

from otel_kit import catalogue
from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._support import LogOnce
from otel_kit.catalogue import MetricSpec

__all__ = ["instrument"]


Callback = Callable[[CallbackOptions], Iterable[Observation]]

# Read at each collection: the sysctl can be switched while the process runs.
DELAY_ACCOUNTING = "/proc/sys/kernel/task_delayacct"


def _io_wait_counted() -> bool:
    try:
        with open(DELAY_ACCOUNTING, encoding="ascii") as switch:
            return switch.read().strip() != "0"
    except OSError:  # kernels before 5.14 have no switch: counted unless booted nodelayacct
        return True


class _ProcessStats:
    def __init__(self) -> None:
        self.active = True
        self._pid = os.getpid()
        self._process = psutil.Process(self._pid)
        self._failed = LogOnce()  # one warning per series, not one per scrape

    def process(self) -> psutil.Process:
        pid = os.getpid()
        if pid != self._pid:  # forked since setup
            self._pid, self._process = pid, psutil.Process(pid)
        return self._process

    def callback(self, name: str, read: Callable[[], list[Observation]]) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return []
            try:
                return read()
            except Exception:  # one failing read must not cost the other series or the scrape
                message = "otel-kit: reading %s failed; it is left out"
                self._failed(name, logging.WARNING, message, name, exc_info=True)
                return []

        return observe

    def cpu_time(self) -> list[Observation]:
        times = self.process().cpu_times()
        observations = [
            Observation(times.user, {"cpu.mode": "user"}),
            Observation(times.system, {"cpu.mode": "system"}),
        ]
        wait = getattr(times, "iowait", None)  # psutil has it on Linux only
        if wait is not None and _io_wait_counted():
            observations.append(Observation(wait, {"cpu.mode": "wait"}))
        return observations

    def memory_usage(self) -> list[Observation]:
        return [Observation(self.process().memory_info().rss)]

    def memory_virtual(self) -> list[Observation]:
        return [Observation(self.process().memory_info().vms)]

    def file_descriptors(self) -> list[Observation]:
        return [Observation(self.process().num_fds())]

    def threads(self) -> list[Observation]:
        return [Observation(self.process().num_threads())]


def _gc_stat(key: str) -> Callable[[], list[Observation]]:
    def read() -> list[Observation]:
        return [
            Observation(stats[key], {"cpython.gc.generation": generation})
            for generation, stats in enumerate(gc.get_stats())
        ]

    return read


def instrument(integration: IntegrationContext) -> Callable[[], None]:
    """Register the runtime instruments; returns the undo (callbacks stop reporting)."""
    meter = integration.meter_provider.get_meter("otel_kit.runtime")
    stats = _ProcessStats()
    instruments: list[tuple[MetricSpec, Callable[[], list[Observation]]]] = [
        (catalogue.PROCESS_CPU_TIME, stats.cpu_time),
        (catalogue.PROCESS_MEMORY_USAGE, stats.memory_usage),
        (catalogue.PROCESS_MEMORY_VIRTUAL, stats.memory_virtual),
        (catalogue.PROCESS_THREAD_COUNT, stats.threads),
        (catalogue.CPYTHON_GC_COLLECTIONS, _gc_stat("collections")),
        (catalogue.CPYTHON_GC_COLLECTED_OBJECTS, _gc_stat("collected")),
        (catalogue.CPYTHON_GC_UNCOLLECTABLE_OBJECTS, _gc_stat("uncollectable")),
    ]
    if hasattr(psutil.Process, "num_fds"):  # Unix only
        instruments.append((catalogue.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT, stats.file_descriptors))
    for spec, read in instruments:
        create = (
            meter.create_observable_counter
            if spec.kind == "counter"
            else meter.create_observable_up_down_counter
        )
        create(
            spec.name,
            [stats.callback(spec.name, read)],
            unit=spec.unit,
            description=spec.description,
        )

    def undo() -> None:
        stats.active = False

    return undo
