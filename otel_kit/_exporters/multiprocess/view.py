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
    bind,
    directory_lock,
    token_of,
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
from otel_kit._exporters.prometheus import Translation, prometheus_families
from otel_kit._support import LogOnce

__all__ = [
    "SCRAPE_WAIT",
    "DecodedFiles",
    "answer",
    "collect",
    "compact",
    "merged_registry",
    "metrics_app",
    "receive",
]

SCRAPE_WAIT = 1.0  # s a scrape waits for the other processes' fresh snapshots
FOLDED_KEPT = 1024  # tokens of folded processes remembered, so a file left behind never counts
# A snapshot holds at most cardinality_limit points per metric: ~100 bytes each in JSON. A file
# far larger is not one (or not worth a scrape's memory): it is set aside unread.
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
_REQUEST, _ANSWER = b"snapshot", b"ok"
Decoded = tuple[Snapshot, dict[str, Any]]  # a snapshot file's snapshot and other fields
# The files the latest scrape decoded, by path, with their bytes: one whose bytes have not
# changed since (the archive between folds, the snapshot of a process that recorded nothing
# new) is not decoded again. What it holds is never changed: merging copies (`merge_into`).
DecodedFiles = dict[str, tuple[bytes, Decoded]]
_log = logging.getLogger("otel_kit")
_warn_once = LogOnce().warning


# --- asking and answering ---------------------------------------------------------------


def _ask_all(directory: Path, own: str, replies: socket.socket) -> tuple[dict[str, str], set[str]]:
    """Ask every other process for a snapshot: (token: socket path) of those asked, and the
    tokens of those whose socket refused (dead)."""
    pending: dict[str, str] = {}
    refused: set[str] = set()
    for entry in os.scandir(directory):
        token = token_of(entry.name, ".sock")
        if token is None or token == own:
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
    directory: Path,
    own: str,
    write_own: Callable[[], Snapshot],
    resource: Resource,
    limit: int,
    decoded: DecodedFiles | None = None,
) -> MetricsData:
    """Every process's metrics, merged, at most `limit` attribute sets per metric. `write_own`
    writes this process's (token `own`) snapshot and returns it; `decoded`: the files this
    process decoded in its previous scrape (updated)."""
    reply_path = str(directory / f"{own}-{secrets.token_hex(3)}.reply")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as replies:
        try:
            bind(replies, Path(reply_path))  # root's is handed to gunicorn --user's user
        except OSError:  # a full disk: no fresh snapshots, the last ones still count
            _warn_once(f"otel-kit: cannot create {reply_path}; used the processes' last data")
            pending: dict[str, str] = {}
            refused: set[str] = set()
            local = write_own()
        else:
            try:
                pending, refused = _ask_all(directory, own, replies)
                # Written too, like the others': if this process is killed later, what this
                # scrape showed of it stays counted (totals never go down).
                local = write_own()
                _await(replies, pending)
            finally:
                unlink(reply_path)
    with directory_lock(directory, timeout=10.0):
        total, live = _gather(directory, own, refused, limit, decoded)
    live[own] = local
    for token in sorted(live):  # the same order whichever process is scraped
        merge_into(total, live[token], live=True, limit=limit)
    return to_metrics_data(total, resource)


def _quarantine(path: str, reason: str) -> None:
    """Set a file that is not a good snapshot aside (`.bad`), once, with one warning: left in
    place it would fail or skew every scrape, and nobody may be watching the directory."""
    _log.warning("otel-kit: set aside %s (%s) as %s.bad", path, reason, os.path.basename(path))
    try:
        os.replace(path, path + ".bad")
    except OSError:
        unlink(path)


def _read(path: str, decoded: DecodedFiles, fresh: DecodedFiles) -> Decoded | None:
    """A snapshot file's content; None if it is gone or was set aside (bad or too big).
    Taken from `decoded` if its bytes are the same; added to `fresh`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symbolic link (ELOOP), or unreadable
        _quarantine(path, exc.strerror or "unreadable")
        return None
    with os.fdopen(fd, "rb") as file:
        data = file.read(MAX_SNAPSHOT_BYTES + 1)
    if len(data) > MAX_SNAPSHOT_BYTES:
        _quarantine(path, f"larger than {MAX_SNAPSHOT_BYTES} bytes")
        return None
    known = decoded.get(path)
    if known is not None and known[0] == data:
        content = known[1]
    else:
        try:
            content = decode(data)
        except ValueError as exc:
            _quarantine(path, str(exc)[:200])
            return None
    fresh[path] = (data, content)
    return content


def _gather(
    directory: Path, own: str, refused: set[str], limit: int, decoded: DecodedFiles | None = None
) -> tuple[Snapshot, dict[str, Snapshot]]:
    """Under the directory lock: fold dead processes into the archive; return the archive
    (a new snapshot: `decoded` keeps what the files held, unchanged) and the live processes'
    snapshots by token (but `own`'s), not to be changed either.

    A process's counts are folded at most once, whatever the interleaving of scrapes,
    compactions and crashes: the archive and the tokens it folded are written together
    (one rename), and a snapshot whose token the archive lists is removed unread (a crash
    between writing the archive and removing the files leaves it behind, and the next fold
    removes it). Tokens are random and never reused; the archive keeps the last FOLDED_KEPT,
    and always all of the latest fold's."""
    previous = {} if decoded is None else decoded
    fresh: DecodedFiles = {}
    read = _read(str(directory / ARCHIVE), previous, fresh)
    archive: Snapshot = {}
    extra: dict[str, Any] = {}
    if read is not None:
        merge_into(archive, read[0], live=False, limit=limit)
        extra = read[1]
    listed = extra.get("folded")
    folded = [t for t in listed if isinstance(t, str)] if isinstance(listed, list) else []
    live: dict[str, Snapshot] = {}
    dead: list[str] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            token = token_of(name, ".json")
            if token is None or token == own:
                continue
            if token in folded:  # folded, then a crash before its removal: never count twice
                unlink(entry.path)
                continue
            part = _read(entry.path, previous, fresh)
            if part is None:
                continue
            if token in refused or not (directory / f"{token}.sock").exists():
                merge_into(archive, part[0], live=False, limit=limit)
                dead.append(token)
            else:
                live[token] = part[0]
    if decoded is not None:  # what this scrape read: the files of ended processes leave it
        decoded.clear()
        decoded.update(fresh)
    if dead:
        try:
            kept = folded[max(0, len(folded) + len(dead) - FOLDED_KEPT) :] + dead
            write_atomic(directory / ARCHIVE, encode(archive, folded=kept))
        except OSError as exc:  # a full disk: this scrape shows them; a later one folds them
            _warn_once(f"otel-kit: cannot write {directory / ARCHIVE} ({exc.strerror})")
            return archive, live
    for token in dead + [t for t in refused if t not in dead]:
        for suffix in (".json", ".sock", ".json.tmp"):
            unlink(directory / f"{token}{suffix}")
    return archive, live


def compact(directory: Path, own: str, limit: int) -> None:
    """Fold what dead processes left, so recycled workers leave no files even unscraped."""
    try:
        names = set(os.listdir(directory))
        sockets = {t for t in (token_of(name, ".sock") for name in names) if t and t != own}
        refused = {t for t in sockets if not alive(str(directory / f"{t}.sock"))}
        snapshots = {t for t in (token_of(name, ".json") for name in names) if t}
        exited = bool(snapshots - sockets - {own})
        if refused or exited:
            with directory_lock(directory, timeout=10.0):
                _gather(directory, own, refused, limit)
    except Exception:
        _log.exception("otel-kit: folding finished processes' metrics failed")


# --- serving it -----------------------------------------------------------------------------


class _Merged(Collector):
    def __init__(self, collect: Callable[[], MetricsData], translation: Translation) -> None:
        self._collect = collect
        self._translation = translation

    def collect(self) -> Iterable[PrometheusMetric]:
        return list(prometheus_families(self._collect(), self._translation))


class _Fixed(Collector):
    def __init__(self, families: list[PrometheusMetric]) -> None:
        self._families = families

    def collect(self) -> Iterable[PrometheusMetric]:
        return self._families


def merged_registry(
    collect: Callable[[], MetricsData], translation: Translation
) -> CollectorRegistry:
    """A registry whose every collection is `collect()` (the merged view) in Prometheus form."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(collect, translation))
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
