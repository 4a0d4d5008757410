"""Direct Prometheus export from several processes of one service: one view of all of them.

Pre-forking servers (gunicorn, `uvicorn --workers`) run the application in several processes,
each with its own in-memory metrics, so a scrape answered by one worker sees one worker. With a
data directory (`OTEL_KIT_MULTIPROC_DIR`, set by `otel-kit run`) every process takes part:

- the hot path does not change: instruments stay in memory, in each process;
- each process writes its cumulative metrics to `<dir>/<token>.json` (write, then rename) when
  asked, every 5 s, and when it exits (on SIGTERM too under `otel-kit run`: `signals`);
- a scrape, in whichever process gets it, asks every live process for a fresh snapshot over a
  unix datagram socket and merges (`view`, with the rules of `snapshot`);
- dead processes' counters and histograms are folded into `<dir>/archive.json` under a lock and
  their files removed (`directory`): totals never decrease and recycled workers leave nothing;
- a process forked from one that had recorded (gunicorn `--preload`) subtracts what it inherited
  (`_otel_data.Baseline`).

Why not prometheus_client's multiprocess mode: it needs its own metric classes (memory-mapped
values written on every increment), so neither OTel SDK instruments nor otel-kit's fast ones can
use it. See docs/multiprocess.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import threading
import weakref
from collections.abc import Callable
from time import monotonic, time_ns
from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.resources import Resource

from otel_kit._exporters.multiprocess import signals, view
from otel_kit._exporters.multiprocess.directory import (
    OWNED_MARKER,
    bind,
    check_directory,
    claim_port,
    claim_worker,
    directory_lock,
    instance_id,
    live_processes,
    remove_created,
    reset,
    touch,
    unlink,
    write_atomic,
)
from otel_kit._exporters.multiprocess.snapshot import (
    HistogramPoint,
    MetricKey,
    MetricPoints,
    ScopeKey,
    Snapshot,
    decode,
    encode,
    merge_into,
    per_worker,
    snapshot_of,
    to_metrics_data,
)
from otel_kit._exporters.prometheus import PullReader
from otel_kit._otel_data import Baseline
from otel_kit._support import LogOnce, at_fork

__all__ = [
    "OWNED_MARKER",
    "HistogramPoint",
    "MetricKey",
    "MetricPoints",
    "Multiprocess",
    "ScopeKey",
    "Snapshot",
    "check_directory",
    "decode",
    "encode",
    "live_processes",
    "merge_into",
    "reset",
    "snapshot_of",
    "to_metrics_data",
]

SNAPSHOT_INTERVAL = 5.0  # s between periodic snapshots (they only matter for killed processes)
_log = logging.getLogger("otel_kit")
_warn_once = LogOnce().warning


class Multiprocess:
    """This process's part in the shared view: answers snapshot requests, merges on scrape.

    handle_sigterm: make SIGTERM's default action write the final snapshot first (`signals`;
    `otel-kit run` asks for it). Without it, SIGTERM's default action skips the final snapshot:
    call `close()` (`MetricsHandle.shutdown()`) from the server's shutdown instead.
    """

    def __init__(
        self,
        directory: str,
        reader: PullReader,
        resource: Resource,
        *,
        keep_instance_id: bool,
        cardinality_limit: int,
        handle_sigterm: bool = False,
    ) -> None:
        self.directory = check_directory(directory)
        self._reader = reader
        self._limit = cardinality_limit
        if not keep_instance_id:
            instance = {"service.instance.id": instance_id(self.directory)}
            resource = resource.merge(Resource(instance))
        self.resource = resource
        self._lock = threading.Lock()  # local reads and snapshot writes
        self._baseline = Baseline()  # what this process inherited through fork: nothing yet
        self._written: MetricsData | None = None  # what the last snapshot held, before baseline
        self._closed = False
        self._port_fd: int | None = None
        self._worker, self._worker_fd = claim_worker(self.directory)
        self._sock: socket.socket | None = None
        self._token = ""
        self._decoded: view.DecodedFiles = {}  # the files the last scrape read
        self._listen()
        self.registry = view.merged_registry(self.collect, reader.translation)
        at_fork(
            self,
            before=Multiprocess._before_fork,
            after_in_parent=Multiprocess._after_fork_in_parent,
            after_in_child=Multiprocess._after_fork_in_child,
        )
        atexit.register(_exit, weakref.ref(self))
        if handle_sigterm:
            signals.exit_on_sigterm(self)

    # The socket and its thread.

    def _listen(self) -> None:
        token = secrets.token_hex(6)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind(sock, self.directory / f"{token}.sock")  # directory.bind: see gunicorn --user
        self._token, self._sock = token, sock
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="otel-kit-multiprocess", daemon=True
        )
        self._thread.start()

    def _serve(self, sock: socket.socket) -> None:
        view.compact(self.directory, self._token, self._limit)
        next_periodic = monotonic() + SNAPSHOT_INTERVAL
        while self._sock is sock:
            try:
                senders = view.receive(sock, next_periodic - monotonic())
            except OSError:
                return  # the socket was closed: the process is leaving
            if self._sock is not sock:
                return
            if not senders:
                next_periodic = monotonic() + SNAPSHOT_INTERVAL
                touch(self.directory, self._token, self._worker)
            try:
                self.write_snapshot()
            except Exception:
                if not self.directory.exists():
                    return  # the run is over (its root process removed the directory)
                _warn_once("otel-kit: multi-process snapshot failed", exc_info=True)
            view.answer(sock, senders)  # even after a failure: nobody waits in vain

    # Snapshots.

    def _write_locked(self) -> Snapshot:
        """Write this process's snapshot and return it; on a full disk (or another write
        error) return it all the same: the scrape shows it, the last file stays."""
        self._rejoin_if_gone()
        read = self._reader.read()
        local = per_worker(snapshot_of(self._baseline.subtract(read)), self._worker)
        try:
            write_atomic(self.directory / f"{self._token}.json", encode(local, pid=os.getpid()))
        except OSError as exc:
            if not self.directory.exists():
                raise  # the run is over (its root process removed the directory)
            _warn_once(f"otel-kit: cannot write the multi-process snapshot ({exc.strerror})")
        else:
            self._written = read
        return local

    def _rejoin_if_gone(self) -> None:
        """Our socket file vanished (removed by a /tmp cleaner or a person): scrapes now take
        this process for dead and fold its last snapshot into the archive (once: its token is
        remembered). Go on under a new token, counting from what that snapshot held, so
        nothing is counted twice or lost beyond what changed while nobody could ask us."""
        if self._sock is None or os.path.exists(self.directory / f"{self._token}.sock"):
            return
        if not self.directory.exists():
            return
        _warn_once("otel-kit: this process's multi-process socket was removed; rejoined")
        if self._written is not None:
            self._baseline = Baseline.of(self._written, time_ns())
        old = self._sock
        self._listen()
        old.close()

    def write_snapshot(self) -> None:
        with self._lock:
            if not self._closed:
                self._write_locked()

    def _write_for_scrape(self) -> Snapshot:
        with self._lock:
            return {} if self._closed else self._write_locked()

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
            signals.forget(self)
            sock, self._sock = self._sock, None
            try:
                with directory_lock(self.directory, timeout=1.0):
                    self._write_locked()
                    unlink(self.directory / f"{self._token}.sock")
            except (OSError, TimeoutError):
                if self.directory.exists():
                    _log.exception("otel-kit: final multi-process snapshot failed")
            if sock is not None:
                sock.close()
            os.close(self._worker_fd)  # its number is free for the next process
            self._worker_fd = -1
        finally:
            self._lock.release()

    def exit(self) -> None:
        """At process exit: close; the root process of `otel-kit run` also removes the
        directory if that run created it (its marker holds the run's id: `remove_created`)."""
        self.close()
        if os.environ.get("OTEL_KIT_RUN_PID") == str(os.getpid()):
            remove_created(self.directory, os.environ.get("OTEL_KIT_RUN_ID", ""))

    def claim_port(self) -> bool:
        """True for the one process that serves the metrics port (no EADDRINUSE in workers)."""
        fd = claim_port(self.directory)
        if fd is None:
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
        os.close(self._worker_fd)  # the parent's worker number; the child takes its own
        self._worker, self._worker_fd = claim_worker(self.directory)
        if self._sock is not None:
            self._sock.close()
        try:
            self._baseline = Baseline.of(self._reader.read(), time_ns())
        except Exception:  # still take part: counting twice beats not counting
            _log.exception("otel-kit: reading the counts inherited through fork failed")
        self._listen()

    # Scrapes.

    def collect(self) -> MetricsData:
        """Every process's metrics, merged. Asks the others for a fresh snapshot first."""
        with self._lock:
            self._rejoin_if_gone()  # before the token is read: this scrape counts us once
        return view.collect(
            self.directory,
            self._token,
            self._write_for_scrape,
            self.resource,
            self._limit,
            self._decoded,
        )

    def asgi_app(self) -> Callable[..., Any]:
        """The metrics endpoint (the merge runs in a thread, see `view.metrics_app`)."""
        return view.metrics_app(self.registry)


def _exit(ref: weakref.ref[Multiprocess]) -> None:
    participant = ref()
    if participant is None:
        return
    try:
        participant.exit()
    except Exception:
        _log.exception("otel-kit: leaving the multi-process view at exit failed")
