"""The data directory every process of a service shares, and what lives in it.

| file | what |
|---|---|
| `<token>.sock` | a process's unix datagram socket; a refused one means a dead process |
| `<token>.json` | a process's latest snapshot (written to `.tmp`, then renamed) |
| `archive.json` | counters and histograms of processes that ended, summed |
| `instance.id` | one `service.instance.id` for every process of the run |
| `lock`, `port.lock` | `flock` locks: folding into the archive; the process serving the port |
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from time import monotonic

from otel_kit.config import ConfigError

__all__ = [
    "ARCHIVE",
    "MAX_DIR_LENGTH",
    "OWNED_MARKER",
    "alive",
    "check_directory",
    "claim_port",
    "directory_lock",
    "instance_id",
    "live_processes",
    "reset",
    "touch",
    "unlink",
    "write_atomic",
]

OWNED_MARKER = ".otel-kit-run"  # in directories `otel-kit run` created (and removes at exit)
ARCHIVE = "archive.json"
# A unix socket path holds at most 103 bytes (macOS); the longest name here is 26.
MAX_DIR_LENGTH = 76


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


def alive(path: str) -> bool:
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
        if entry.name.endswith(".sock") and alive(entry.path)
    ]


def reset(directory: Path) -> None:
    """Remove what earlier runs left (call only when no process is live)."""
    for entry in os.scandir(directory):
        name = entry.name
        if name.endswith((".json", ".sock", ".tmp", ".reply")) or name in ("instance.id", "lock"):
            unlink(entry.path)


@contextlib.contextmanager
def directory_lock(directory: Path, timeout: float) -> Iterator[None]:
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


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def unlink(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def instance_id(directory: Path) -> str:
    """One `service.instance.id` for every process of the run: target_info stays one series."""
    path = directory / "instance.id"
    if not path.exists():
        tmp = directory / f"instance.{secrets.token_hex(6)}.tmp"
        tmp.write_text(str(uuid.uuid4()))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic create-if-missing, with its content
        tmp.unlink()
    return path.read_text().strip()


def claim_port(directory: Path) -> int | None:
    """The descriptor holding the port lock for the one process that serves the metrics port
    (no EADDRINUSE in workers); None in every other process. Keep it open while serving."""
    fd = os.open(directory / "port.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def touch(directory: Path, token: str) -> None:
    """Keep the files a live process relies on recent: /tmp cleaners (systemd-tmpfiles on some
    distributions) remove files unchanged for days, and a missing socket would make the
    process look dead."""
    for name in (f"{token}.sock", "lock", "port.lock", "instance.id", OWNED_MARKER):
        with contextlib.suppress(OSError):
            os.utime(directory / name)
