"""Direct Prometheus export from several processes of one service: one view of all of them.

Pre-forking servers (gunicorn, `uvicorn --workers`) run the application in several processes,
each with its own in-memory metrics, so a scrape answered by one worker sees one worker. With a
data directory (`OTEL_KIT_MULTIPROC_DIR`, set by `otel-kit run`) every process takes part:

- the hot path does not change: instruments stay in memory, in each process;
- each process writes its cumulative metrics to `<dir>/<token>.json` (write, then rename) when
  asked, every 5 s, and when it exits (also on SIGTERM);
- a scrape, in whichever process gets it, asks every live process for a fresh snapshot over a
  unix datagram socket (`<dir>/<token>.sock`; a refused socket means a dead process), waits for
  the answers (1 s at most), and merges: counters and histograms over live and dead processes,
  up-down counters (summed) and gauges (largest value) over live ones only;
- dead processes' counters and histograms are folded into `<dir>/archive.json` under a lock and
  their files removed: totals never decrease and recycled workers leave nothing behind;
- a process forked from one that had recorded (gunicorn `--preload`) subtracts what it inherited.

Why not prometheus_client's multiprocess mode: it needs its own metric classes (memory-mapped
values written on every increment), so neither OTel SDK instruments nor otel-kit's fast ones can
use it. See docs/multiprocess.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from time import monotonic, time_ns
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import make_asgi_app
from prometheus_client.core import Metric as PrometheusMetric
from prometheus_client.registry import Collector, CollectorRegistry

from otel_kit._exporters.prometheus import PullReader, _families
from otel_kit.config import ConfigError

__all__ = ["Families", "Family", "Multiprocess", "check_directory", "live_processes", "reset"]

_log = logging.getLogger("otel_kit")

SNAPSHOT_INTERVAL = 5.0  # s between periodic snapshots (they only matter for killed processes)
SCRAPE_WAIT = 1.0  # s a scrape waits for the other processes' fresh snapshots
OWNED_MARKER = ".otel-kit-run"  # in directories `otel-kit run` created (and removes at exit)
_FORMAT = 1
_ARCHIVE = "archive.json"
# A unix socket path holds at most 103 bytes (macOS); the longest name here is 26.
MAX_DIR_LENGTH = 76

AttrKey = tuple[tuple[str, Any], ...]


@dataclass
class HistogramPoint:
    bounds: tuple[float, ...]
    counts: list[int]
    sum: float
    min: float
    max: float

    def copy(self) -> HistogramPoint:
        return HistogramPoint(self.bounds, list(self.counts), self.sum, self.min, self.max)


@dataclass
class Family:
    """One metric's points by attribute set. kind: counter, updown, gauge or histogram."""

    kind: str
    unit: str
    description: str
    points: dict[AttrKey, Any]  # float, or HistogramPoint for histograms


Families = dict[str, Family]
_CUMULATIVE_KINDS = ("counter", "histogram")


# --- the data model: OTel data -> families -> merged families -> OTel data -------------------


def _key(attributes: Any) -> AttrKey:
    if not attributes:
        return ()
    return tuple(
        sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in attributes.items())
    )


def _kind(data: Any) -> str | None:
    if isinstance(data, Histogram):
        return "histogram"
    if isinstance(data, Sum):
        return "counter" if data.is_monotonic else "updown"
    if isinstance(data, Gauge):
        return "gauge"
    return None  # exponential histograms: no Prometheus text form, not exported either


def _combine(kind: str, old: Any, new: Any) -> Any:
    if old is None:
        return new.copy() if kind == "histogram" else new
    if kind == "gauge":
        return max(old, new)
    if kind != "histogram":
        return old + new
    if old.bounds != new.bounds:
        _warn_once("otel-kit: histogram buckets differ between processes; kept the first")
        return old
    counts = [a + b for a, b in zip(old.counts, new.counts, strict=True)]
    return HistogramPoint(
        old.bounds, counts, old.sum + new.sum, min(old.min, new.min), max(old.max, new.max)
    )


def families_of(data: MetricsData) -> Families:
    """The metrics of one process (a reader's collection) as families."""
    out: Families = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = _kind(metric.data)
                if kind is None:
                    continue
                family = out.get(metric.name)
                if family is None:
                    family = Family(kind, metric.unit or "", metric.description or "", {})
                    out[metric.name] = family
                elif family.kind != kind:
                    continue
                points = family.points
                data_points: Iterable[Any] = metric.data.data_points
                for point in data_points:
                    key = _key(point.attributes)
                    if kind == "histogram":
                        value: Any = HistogramPoint(
                            tuple(point.explicit_bounds),
                            list(point.bucket_counts),
                            point.sum,
                            point.min,
                            point.max,
                        )
                    else:
                        value = point.value
                    points[key] = _combine(kind, points.get(key), value)
    return out


def merge_into(total: Families, part: Families, *, live: bool) -> None:
    """Add `part` (one process) to `total`. A dead process adds only counters and histograms:
    its gauges and up-down counters described a state that ended with it."""
    for name, family in part.items():
        if not live and family.kind not in _CUMULATIVE_KINDS:
            continue
        into = total.get(name)
        if into is None:
            into = total[name] = Family(family.kind, family.unit, family.description, {})
        elif into.kind != family.kind:
            _warn_once(f"otel-kit: {name} is a {into.kind} and a {family.kind}; kept the first")
            continue
        points = into.points
        for key, value in family.points.items():
            points[key] = _combine(family.kind, points.get(key), value)


def subtract(part: Families, baseline: Families) -> Families:
    """`part` minus what a forked process inherited (counters and histograms only)."""
    if not baseline:
        return part
    out: Families = {}
    for name, family in part.items():
        base = baseline.get(name)
        if base is None or base.kind != family.kind or family.kind not in _CUMULATIVE_KINDS:
            out[name] = family
            continue
        points: dict[AttrKey, Any] = {}
        for key, value in family.points.items():
            old = base.points.get(key)
            if old is None:
                points[key] = value
            elif family.kind == "counter":
                points[key] = max(value - old, 0)
            elif value.bounds == old.bounds:
                counts = [max(a - b, 0) for a, b in zip(value.counts, old.counts, strict=True)]
                points[key] = HistogramPoint(
                    value.bounds, counts, value.sum - old.sum, value.min, value.max
                )
            else:
                points[key] = value
        out[name] = Family(family.kind, family.unit, family.description, points)
    return out


def encode(families: Families, **extra: Any) -> bytes:
    metrics = []
    for name, family in families.items():
        if family.kind == "histogram":
            points = [
                [key, p.bounds, p.counts, p.sum, p.min, p.max] for key, p in family.points.items()
            ]
        else:
            points = [[key, value] for key, value in family.points.items()]
        metrics.append([name, family.kind, family.unit, family.description, points])
    document = {"format": _FORMAT, **extra, "metrics": metrics}
    return json.dumps(document, separators=(",", ":")).encode()


def _decode_key(pairs: list[list[Any]]) -> AttrKey:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in pairs)


def decode(data: bytes) -> tuple[Families, dict[str, Any]]:
    """Families and the document's other fields; ValueError if it is not a snapshot."""
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError("not an otel-kit snapshot of this version")
    families: Families = {}
    try:
        for name, kind, unit, description, raw_points in document.pop("metrics"):
            points: dict[AttrKey, Any] = {}
            if kind == "histogram":
                for key, bounds, counts, total, low, high in raw_points:
                    point = HistogramPoint(tuple(bounds), counts, total, low, high)
                    points[_decode_key(key)] = point
            else:
                for key, value in raw_points:
                    points[_decode_key(key)] = value
            families[name] = Family(kind, unit, description, points)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed otel-kit snapshot: {exc}") from None
    return families, document


def to_metrics_data(families: Families, resource: Resource) -> MetricsData:
    now = time_ns()
    metrics = []
    for name, family in families.items():
        data: Any
        if family.kind == "histogram":
            data = Histogram(
                data_points=[
                    HistogramDataPoint(
                        attributes=dict(key),
                        start_time_unix_nano=now,
                        time_unix_nano=now,
                        count=sum(p.counts),
                        sum=p.sum,
                        bucket_counts=p.counts,
                        explicit_bounds=p.bounds,
                        min=p.min,
                        max=p.max,
                    )
                    for key, p in family.points.items()
                ],
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            )
        else:
            points = [
                NumberDataPoint(
                    attributes=dict(key),
                    start_time_unix_nano=now,
                    time_unix_nano=now,
                    value=value,
                )
                for key, value in family.points.items()
            ]
            if family.kind == "gauge":
                data = Gauge(data_points=points)
            else:
                data = Sum(
                    data_points=points,
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=family.kind == "counter",
                )
        metrics.append(Metric(name, family.description, family.unit, data))
    scope = ScopeMetrics(InstrumentationScope("otel_kit.multiprocess"), metrics, "")
    return MetricsData([ResourceMetrics(resource, [scope], "")])


# --- the data directory -------------------------------------------------------------------


def check_directory(path: str) -> Path:
    """The directory as an absolute path, created if missing; ConfigError if unusable."""
    absolute = Path(path).absolute()
    where = f"invalid setting multiproc_dir / OTEL_KIT_MULTIPROC_DIR = {path!r}"
    if len(str(absolute)) > MAX_DIR_LENGTH:
        raise ConfigError(
            f"{where}: expected a directory path of at most {MAX_DIR_LENGTH} characters "
            "(it holds unix sockets, whose paths are short)"
        )
    try:
        absolute.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create it ({exc.strerror})") from None
    return absolute


def _alive(path: str) -> bool:
    """Whether a process still holds this socket (the kernel refuses it once the owner died)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


def live_processes(directory: Path) -> list[str]:
    """Tokens of the processes taking part in this directory's view right now."""
    return [
        entry.name.removesuffix(".sock")
        for entry in os.scandir(directory)
        if entry.name.endswith(".sock") and _alive(entry.path)
    ]


def reset(directory: Path) -> None:
    """Remove what earlier runs left (call only when no process is live)."""
    for entry in os.scandir(directory):
        name = entry.name
        if name.endswith((".json", ".sock", ".tmp", ".reply")) or name in ("instance.id", "lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


@contextlib.contextmanager
def _directory_lock(directory: Path, timeout: float) -> Iterator[None]:
    """Exclusive lock between processes (flock) around archive folding and final snapshots."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if monotonic() > deadline:
                    raise TimeoutError(f"otel-kit: {directory / 'lock'} stayed locked") from None
                time.sleep(0.002)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)  # explicit: a forked child may hold a copy of fd
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _instance_id(directory: Path) -> str:
    """One `service.instance.id` for every process of the run: target_info stays one series."""
    path = directory / "instance.id"
    if not path.exists():
        tmp = directory / f"instance.{secrets.token_hex(6)}.tmp"
        tmp.write_text(str(uuid.uuid4()))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic create-if-missing, with its content
        tmp.unlink()
    return path.read_text().strip()


# --- this process's part ------------------------------------------------------------------


class Multiprocess:
    """This process's part in the shared view: answers snapshot requests, merges on scrape."""

    def __init__(
        self, directory: str, reader: PullReader, resource: Resource, *, keep_instance_id: bool
    ) -> None:
        self.directory = check_directory(directory)
        self._reader = reader
        if not keep_instance_id:
            instance = {"service.instance.id": _instance_id(self.directory)}
            resource = resource.merge(Resource(instance))
        self.resource = resource
        self._lock = threading.Lock()  # local reads and snapshot writes
        self._baseline: Families = {}
        self._closed = False
        self._port_fd: int | None = None
        self._sock: socket.socket | None = None
        self._token = ""
        self._listen()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_MergedCollector(self))
        _instances.add(self)
        ref = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _call(ref, Multiprocess._before_fork),
            after_in_parent=lambda: _call(ref, Multiprocess._after_fork_in_parent),
            after_in_child=lambda: _call(ref, Multiprocess._after_fork_in_child),
        )
        atexit.register(_call, ref, Multiprocess.exit)
        _install_sigterm_handler()

    # The socket and its thread.

    def _listen(self) -> None:
        token = secrets.token_hex(6)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.directory / f"{token}.sock"))
        self._token, self._sock = token, sock
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="otel-kit-multiprocess", daemon=True
        )
        self._thread.start()

    def _serve(self, sock: socket.socket) -> None:
        self._compact()
        next_periodic = monotonic() + SNAPSHOT_INTERVAL
        while self._sock is sock:
            try:
                senders = _receive(sock, next_periodic - monotonic())
            except OSError:
                return  # the socket was closed: the process is leaving
            if self._sock is not sock:
                return
            if not senders:
                next_periodic = monotonic() + SNAPSHOT_INTERVAL
                self._touch()
            try:
                self.write_snapshot()
            except Exception:
                if not self.directory.exists():
                    return  # the run is over (its root process removed the directory)
                _warn_once("otel-kit: multi-process snapshot failed", exc_info=True)
            for sender in senders:  # answer even after a failure: nobody waits in vain
                with contextlib.suppress(OSError):
                    sock.sendto(b"ok", socket.MSG_DONTWAIT, sender)

    # Snapshots.

    def _local(self) -> Families:
        return subtract(families_of(self._reader.read()), self._baseline)

    def _write_locked(self) -> Families:
        local = self._local()
        _write_atomic(self.directory / f"{self._token}.json", encode(local, pid=os.getpid()))
        return local

    def write_snapshot(self) -> None:
        with self._lock:
            if not self._closed:
                self._write_locked()

    def close(self) -> None:
        """Write the final snapshot and leave the view. Safe to call more than once."""
        # A signal handler may interrupt this very thread while it holds the lock: give up
        # rather than wait forever (the last snapshot, at most 5 s old, stays).
        if not self._lock.acquire(timeout=1.0):
            return
        try:
            if self._closed:
                return
            self._closed = True
            _instances.discard(self)
            sock, self._sock = self._sock, None
            try:
                with _directory_lock(self.directory, timeout=1.0):
                    self._write_locked()
                    with contextlib.suppress(FileNotFoundError):
                        (self.directory / f"{self._token}.sock").unlink()
            except (OSError, TimeoutError):
                if self.directory.exists():
                    _log.exception("otel-kit: final multi-process snapshot failed")
            if sock is not None:
                sock.close()
        finally:
            self._lock.release()

    def exit(self) -> None:
        """At process exit: close; the root process of `otel-kit run` also removes the
        directory it created."""
        self.close()
        if (
            os.environ.get("OTEL_KIT_RUN_PID") == str(os.getpid())
            and (self.directory / OWNED_MARKER).exists()
        ):
            shutil.rmtree(self.directory, ignore_errors=True)

    def claim_port(self) -> bool:
        """True for the one process that serves the metrics port (no EADDRINUSE in workers)."""
        fd = os.open(self.directory / "port.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._port_fd = fd
        return True

    # fork() without exec (gunicorn workers, multiprocessing's "fork"): the child gets its own
    # socket and thread, and subtracts the counts it inherited.

    def _before_fork(self) -> None:
        self._lock.acquire()  # no snapshot half-read in the child

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        self._lock.release()
        if self._port_fd is not None:
            os.close(self._port_fd)  # the parent keeps the lock; closing a copy keeps it held
            self._port_fd = None
        if self._closed:
            return
        if self._sock is not None:
            self._sock.close()
        try:
            self._baseline = families_of(self._reader.read())
        except Exception:  # still take part: counting twice beats not counting
            _log.exception("otel-kit: reading the counts inherited through fork failed")
        self._listen()

    # Scrapes.

    def collect(self) -> MetricsData:
        """Every process's metrics, merged. Asks the others for a fresh snapshot first."""
        reply_path = str(self.directory / f"{self._token}-{secrets.token_hex(3)}.reply")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as replies:
            replies.bind(reply_path)
            try:
                pending, refused = self._ask_all(replies)
                # Written too, like the others': if this process is killed later, what this
                # scrape showed of it stays counted (totals never go down).
                with self._lock:
                    local = {} if self._closed else self._write_locked()
                _await(replies, pending)
            finally:
                _unlink(reply_path)
        with _directory_lock(self.directory, timeout=10.0):
            total, live = self._gather(refused)
        live[self._token] = local
        for token in sorted(live):  # the same order whichever process is scraped
            merge_into(total, live[token], live=True)
        return to_metrics_data(total, self.resource)

    def _ask_all(self, replies: socket.socket) -> tuple[dict[str, str], set[str]]:
        pending: dict[str, str] = {}
        refused: set[str] = set()
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(".sock"):
                continue
            token = entry.name.removesuffix(".sock")
            if token == self._token:
                continue
            try:
                replies.sendto(b"snapshot", socket.MSG_DONTWAIT, entry.path)
                pending[token] = entry.path
            except (ConnectionRefusedError, FileNotFoundError):
                refused.add(token)
            except OSError:  # its queue is full: busy, use its last snapshot
                pass
        return pending, refused

    def _read_archive(self) -> tuple[Families, list[str]]:
        try:
            families, extra = decode((self.directory / _ARCHIVE).read_bytes())
        except FileNotFoundError:
            return {}, []
        return families, list(extra.get("folded", []))

    def _gather(self, refused: set[str]) -> tuple[Families, dict[str, Families]]:
        """Under the directory lock: fold dead processes into the archive; return the archive
        and the live processes' snapshots by token (this process's excepted)."""
        archive, folded = self._read_archive()
        live: dict[str, Families] = {}
        dead: list[str] = []
        for entry in os.scandir(self.directory):
            name = entry.name
            if not name.endswith(".json") or name == _ARCHIVE:
                continue
            token = name.removesuffix(".json")
            if token == self._token:
                continue
            if token in folded:  # folded just before a crash: never count twice
                _unlink(entry.path)
                continue
            try:
                part, _extra = decode(Path(entry.path).read_bytes())
            except FileNotFoundError:
                continue
            except ValueError:
                _warn_once(f"otel-kit: ignored unreadable snapshot {entry.path}")
                continue
            if token in refused or not (self.directory / f"{token}.sock").exists():
                merge_into(archive, part, live=False)
                dead.append(token)
            else:
                live[token] = part
        dead_sockets = [t for t in refused if t not in dead]
        if dead or folded:
            _write_atomic(self.directory / _ARCHIVE, encode(archive, folded=dead))
        for token in dead + dead_sockets:
            for suffix in (".json", ".sock", ".json.tmp"):
                _unlink(str(self.directory / f"{token}{suffix}"))
        return archive, live

    def _compact(self) -> None:
        """Fold what dead processes left, so recycled workers leave no files even unscraped."""
        try:
            names = set(os.listdir(self.directory))
            own = f"{self._token}.sock"
            refused = {
                name.removesuffix(".sock")
                for name in names
                if name.endswith(".sock") and name != own and not _alive(str(self.directory / name))
            }
            exited = any(
                name.endswith(".json") and name != _ARCHIVE and f"{name[:-5]}.sock" not in names
                for name in names
            )
            if refused or exited:
                with _directory_lock(self.directory, timeout=10.0):
                    self._gather(refused)
        except Exception:
            _log.exception("otel-kit: folding finished processes' metrics failed")

    def _touch(self) -> None:
        """Keep the files a live process relies on recent: /tmp cleaners (systemd-tmpfiles on
        some distributions) remove files unchanged for days, and a missing socket would make
        this process look dead."""
        for name in (f"{self._token}.sock", "lock", "port.lock", "instance.id", OWNED_MARKER):
            with contextlib.suppress(OSError):
                os.utime(self.directory / name)

    def asgi_app(self) -> Callable[..., Any]:
        """The metrics endpoint. The merge waits on other processes, so it runs in a thread:
        the worker's event loop keeps serving requests meanwhile."""
        registry = self.registry

        async def metrics_app(scope: Any, receive: Any, send: Any) -> None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # another event loop (trio): merge inline
                families = list(registry.collect())
            else:
                families = await loop.run_in_executor(None, lambda: list(registry.collect()))
            fixed = CollectorRegistry(auto_describe=False)
            fixed.register(_Fixed(families))
            await make_asgi_app(fixed)(scope, receive, send)

        return metrics_app


def _receive(sock: socket.socket, timeout: float) -> list[Any]:
    """The senders of the snapshot requests that arrive within `timeout` seconds, with those
    already queued (one snapshot answers them all); [] when none came."""
    senders: list[Any] = []
    if timeout > 0:
        sock.settimeout(timeout)  # 0 would mean non-blocking: never pass it
        try:
            senders.append(sock.recvfrom(64)[1])
        except TimeoutError:
            return senders
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            senders.append(sock.recvfrom(64)[1])
    return senders


def _await(replies: socket.socket, pending: dict[str, str]) -> None:
    """Wait (SCRAPE_WAIT at most) until every asked process (token: socket path) answered
    or left."""
    deadline = monotonic() + SCRAPE_WAIT
    while pending:
        remaining = deadline - monotonic()
        if remaining <= 0:
            _warn_once("otel-kit: a process did not answer a scrape in time; used its last data")
            return
        replies.settimeout(min(remaining, 0.05))
        try:
            sender = replies.recvfrom(64)[1]
            pending.pop(os.path.basename(sender).removesuffix(".sock"), None)
        except TimeoutError:
            for token in [t for t, path in pending.items() if not os.path.exists(path)]:
                del pending[token]  # it exited meanwhile; its final snapshot is written


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _MergedCollector(Collector):
    def __init__(self, multiprocess: Multiprocess) -> None:
        self._multiprocess = multiprocess

    def collect(self) -> Iterable[PrometheusMetric]:
        return list(_families(self._multiprocess.collect()))


class _Fixed(Collector):
    def __init__(self, families: list[PrometheusMetric]) -> None:
        self._families = families

    def collect(self) -> Iterable[PrometheusMetric]:
        return self._families


_instances: weakref.WeakSet[Multiprocess] = weakref.WeakSet()
_warned: set[str] = set()


def _warn_once(message: str, *, exc_info: bool = False) -> None:
    if message not in _warned:
        _warned.add(message)
        _log.warning(message, exc_info=exc_info)


def _call(ref: weakref.ref[Multiprocess], method: Callable[[Multiprocess], None]) -> None:
    instance = ref()
    if instance is None:
        return
    try:
        method(instance)
    except Exception:
        _log.exception("otel-kit: multi-process %s failed", method.__name__)


_set_signal_handler = signal.signal


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM's default action, after the final snapshot (the default kills without atexit)."""
    for instance in list(_instances):
        _call(weakref.ref(instance), Multiprocess.exit)
    _set_signal_handler(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _signal(signalnum: Any, handler: Any) -> Any:
    if signalnum == signal.SIGTERM and handler == signal.SIG_DFL and _instances:
        handler = _on_sigterm
    return _set_signal_handler(signalnum, handler)


def _install_sigterm_handler() -> None:
    """Make SIGTERM's default action write the final snapshot first, also where a server
    resets SIGTERM to the default: gunicorn's UvicornWorker does, then uvicorn re-raises
    SIGTERM after its graceful shutdown, which would end the worker without atexit."""
    if signal.signal is not _signal:
        signal.signal = _signal
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
