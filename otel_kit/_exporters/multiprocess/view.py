"""The scrape view: every process's metrics, merged, in whichever process gets the scrape.

A scrape asks every other live process for a fresh snapshot (a datagram to its socket; a
refused or missing socket means a dead process), writes its own, waits for the answers
(`SCRAPE_WAIT` at most: a process that does not answer counts with its last snapshot), folds
the snapshots of dead processes into the archive under the directory lock, and merges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from time import monotonic
from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.resources import Resource
from prometheus_client import make_asgi_app
from prometheus_client.core import Metric as PrometheusMetric
from prometheus_client.registry import Collector, CollectorRegistry

from otel_kit._exporters.multiprocess.directory import (
    ARCHIVE,
    alive,
    directory_lock,
    unlink,
    write_atomic,
)
from otel_kit._exporters.multiprocess.snapshot import (
    Snapshot,
    decode,
    encode,
    merge_into,
    to_metrics_data,
)
from otel_kit._exporters.prometheus import prometheus_families
from otel_kit._support import LogOnce

__all__ = [
    "SCRAPE_WAIT",
    "answer",
    "collect",
    "compact",
    "merged_registry",
    "metrics_app",
    "receive",
]

SCRAPE_WAIT = 1.0  # s a scrape waits for the other processes' fresh snapshots
FOLDED_KEPT = 1024  # tokens of folded processes remembered, so a file left behind never counts
_REQUEST, _ANSWER = b"snapshot", b"ok"
_log = logging.getLogger("otel_kit")
_warn_once = LogOnce().warning


# --- asking and answering ---------------------------------------------------------------


def _ask_all(directory: Path, own: str, replies: socket.socket) -> tuple[dict[str, str], set[str]]:
    """Ask every other process for a snapshot: (token: socket path) of those asked, and the
    tokens of those whose socket refused (dead)."""
    pending: dict[str, str] = {}
    refused: set[str] = set()
    for entry in os.scandir(directory):
        if not entry.name.endswith(".sock"):
            continue
        token = entry.name.removesuffix(".sock")
        if token == own:
            continue
        try:
            replies.sendto(_REQUEST, socket.MSG_DONTWAIT, entry.path)
            pending[token] = entry.path
        except (ConnectionRefusedError, FileNotFoundError):
            refused.add(token)
        except OSError:  # its queue is full: busy, use its last snapshot
            pass
    return pending, refused


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


def receive(sock: socket.socket, timeout: float) -> list[Any]:
    """In the asked process: the senders of the snapshot requests that arrive within `timeout`
    seconds, with those already queued (one snapshot answers them all); [] when none came."""
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


def answer(sock: socket.socket, senders: Iterable[Any]) -> None:
    """Tell the scrapes that asked that the snapshot is written."""
    for sender in senders:
        with contextlib.suppress(OSError):
            sock.sendto(_ANSWER, socket.MSG_DONTWAIT, sender)


# --- merging ------------------------------------------------------------------------------


def collect(
    directory: Path, own: str, write_own: Callable[[], Snapshot], resource: Resource
) -> MetricsData:
    """Every process's metrics, merged. `write_own` writes this process's (token `own`)
    snapshot and returns it."""
    reply_path = str(directory / f"{own}-{secrets.token_hex(3)}.reply")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as replies:
        replies.bind(reply_path)
        try:
            pending, refused = _ask_all(directory, own, replies)
            # Written too, like the others': if this process is killed later, what this
            # scrape showed of it stays counted (totals never go down).
            local = write_own()
            _await(replies, pending)
        finally:
            unlink(reply_path)
    with directory_lock(directory, timeout=10.0):
        total, live = _gather(directory, own, refused)
    live[own] = local
    for token in sorted(live):  # the same order whichever process is scraped
        merge_into(total, live[token], live=True)
    return to_metrics_data(total, resource)


def _read_archive(directory: Path) -> tuple[Snapshot, list[str]]:
    try:
        archive, extra = decode((directory / ARCHIVE).read_bytes())
    except FileNotFoundError:
        return {}, []
    return archive, list(extra.get("folded", []))


def _gather(directory: Path, own: str, refused: set[str]) -> tuple[Snapshot, dict[str, Snapshot]]:
    """Under the directory lock: fold dead processes into the archive; return the archive
    and the live processes' snapshots by token (but `own`'s)."""
    archive, folded = _read_archive(directory)
    live: dict[str, Snapshot] = {}
    dead: list[str] = []
    for entry in os.scandir(directory):
        name = entry.name
        if not name.endswith(".json") or name == ARCHIVE:
            continue
        token = name.removesuffix(".json")
        if token == own:
            continue
        if token in folded:  # folded, then a crash before its removal: never count twice
            unlink(entry.path)
            continue
        try:
            part, _extra = decode(Path(entry.path).read_bytes())
        except FileNotFoundError:
            continue
        except ValueError:
            _warn_once(f"otel-kit: ignored unreadable snapshot {entry.path}")
            continue
        if token in refused or not (directory / f"{token}.sock").exists():
            merge_into(archive, part, live=False)
            dead.append(token)
        else:
            live[token] = part
    dead_sockets = [t for t in refused if t not in dead]
    if dead:  # tokens are random and never reused: remembering the last ones costs nothing
        write_atomic(directory / ARCHIVE, encode(archive, folded=(folded + dead)[-FOLDED_KEPT:]))
    for token in dead + dead_sockets:
        for suffix in (".json", ".sock", ".json.tmp"):
            unlink(directory / f"{token}{suffix}")
    return archive, live


def compact(directory: Path, own: str) -> None:
    """Fold what dead processes left, so recycled workers leave no files even unscraped."""
    try:
        names = set(os.listdir(directory))
        refused = {
            name.removesuffix(".sock")
            for name in names
            if name.endswith(".sock") and name != f"{own}.sock" and not alive(str(directory / name))
        }
        exited = any(
            name.endswith(".json") and name != ARCHIVE and f"{name[:-5]}.sock" not in names
            for name in names
        )
        if refused or exited:
            with directory_lock(directory, timeout=10.0):
                _gather(directory, own, refused)
    except Exception:
        _log.exception("otel-kit: folding finished processes' metrics failed")


# --- serving it -----------------------------------------------------------------------------


class _Merged(Collector):
    def __init__(self, collect: Callable[[], MetricsData]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[PrometheusMetric]:
        return list(prometheus_families(self._collect()))


class _Fixed(Collector):
    def __init__(self, families: list[PrometheusMetric]) -> None:
        self._families = families

    def collect(self) -> Iterable[PrometheusMetric]:
        return self._families


def merged_registry(collect: Callable[[], MetricsData]) -> CollectorRegistry:
    """A registry whose every collection is `collect()` (the merged view) in Prometheus form."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(collect))
    return registry


def metrics_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """The metrics endpoint. The merge waits on other processes, so it runs in a thread: the
    worker's event loop keeps serving requests meanwhile."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop (trio): merge inline
            families = list(registry.collect())
        else:
            families = await loop.run_in_executor(None, lambda: list(registry.collect()))
        fixed = CollectorRegistry(auto_describe=False)
        fixed.register(_Fixed(families))
        await make_asgi_app(fixed)(scope, receive, send)

    return app
