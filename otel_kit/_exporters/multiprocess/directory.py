"""The data directory every process of a service shares, and what lives in it.

| file | what |
|---|---|
| `<token>.sock` | a process's unix datagram socket; a refused one means a dead process |
| `<token>.json` | a process's latest snapshot (written to a random `.tmp` name, then renamed) |
| `archive.json` | counters and histograms of processes that ended, summed |
| `instance.id` | one `service.instance.id` for every process of the run |
| `lock`, `port.lock` | `flock` locks: folding into the archive; the process serving the port |
| `.otel-kit-run` | in a directory `otel-kit run` created: that run's id (it removes it at exit) |

Whoever can write in the directory can forge metrics, hold the lock, or plant symbolic links
at these names: `check_directory` accepts only a directory of the process's own user that
nobody else can write to, and files are opened without following links (O_NOFOLLOW), created
exclusively (O_EXCL) and mode 0600. Only these names are ever removed (`OWN_NAME`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import socket
import stat
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
    "OWN_NAME",
    "alive",
    "bind",
    "check_directory",
    "claim_port",
    "claim_worker",
    "directory_lock",
    "instance_id",
    "live_processes",
    "read_file",
    "remove_created",
    "reset",
    "token_of",
    "touch",
    "unlink",
    "write_atomic",
]

OWNED_MARKER = ".otel-kit-run"  # in directories `otel-kit run` created: the run's id
ARCHIVE = "archive.json"
# A unix socket path holds at most 103 bytes (macOS); the longest socket name here is 26.
MAX_DIR_LENGTH = 76
# Every name otel-kit creates (tokens are 12 hex digits; temporary files add a random part;
# `view` sets unreadable snapshots aside as `.bad`).
# Nothing else in the directory is ever removed: it may be another program's.
OWN_NAME = re.compile(
    r"(?:[0-9a-f]{12}(?:\.json|\.sock|-[0-9a-f]{6}\.reply)|archive\.json|instance\.id|lock"
    r"|port\.lock|worker\.\d{1,4}\.lock|probe)(?:\.[0-9a-f]{12}\.tmp|\.tmp|\.bad)?"
)
_TOKEN = re.compile(r"[0-9a-f]{12}")
_NEW = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC
# Set by `otel-kit run gunicorn --user U` (root): the directory belongs to U, whose workers
# write there, and the run's root processes hand what they create to U.
RUN_UID = "OTEL_KIT_RUN_UID"


def _expected_owner() -> int:
    """Who the directory must belong to: this process's effective user, or in a root process
    of `otel-kit run gunicorn --user U`, U."""
    euid = os.geteuid()
    run_uid = os.environ.get(RUN_UID, "")
    return int(run_uid) if euid == 0 and run_uid.isdigit() else euid


def check_directory(path: str, owner: int | None = None) -> Path:
    """The directory as an absolute path (links resolved), created (mode 0700) if missing;
    ConfigError unless it belongs to `owner` (default: see `_expected_owner`), nobody else can
    write to it, and this process can."""
    where = f"invalid setting multiproc_dir / OTEL_KIT_MULTIPROC_DIR = {path!r}"
    absolute = Path(path).absolute()
    _check_length(absolute, where)
    try:
        absolute.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Resolved once: a link swapped later cannot lead the processes elsewhere.
        absolute = absolute.resolve(strict=True)
        info = absolute.stat()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create it ({exc.strerror})") from None
    _check_length(absolute, where)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where}: expected a directory")
    owner = _expected_owner() if owner is None else owner
    # As ssh does with ~/.ssh: another user who can write here can forge metrics, hold the
    # lock, or plant links at the names the processes open.
    if info.st_uid != owner or info.st_mode & 0o022:
        raise ConfigError(
            f"{where}: it is owned by uid {info.st_uid} with mode {stat.S_IMODE(info.st_mode):04o};"
            f" expected a directory owned by uid {owner} that group and others cannot write to "
            "(e.g. mode 0700), or a path to create"
        )
    probe = absolute / f"probe.{secrets.token_hex(6)}.tmp"
    try:  # the mode bits do not tell (root, ACLs, a read-only mount): try
        os.close(os.open(probe, _NEW | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise ConfigError(
            f"{where}: not writable by uid {os.geteuid()} ({exc.strerror}); expected a "
            "directory this process can create files in"
        ) from None
    unlink(probe)
    return absolute


def _check_length(absolute: Path, where: str) -> None:
    size = len(os.fsencode(absolute))  # the limit is on bytes: non-ASCII characters take 2-4
    if size > MAX_DIR_LENGTH:
        raise ConfigError(
            f"{where}: expected a directory path of at most {MAX_DIR_LENGTH} characters, "
            f"counted as encoded bytes ({size} here; it holds unix sockets, whose paths are short)"
        )


def _hand_over(fd: int, directory: Path) -> None:
    """In a root process sharing another user's directory (`otel-kit run gunicorn --user`):
    give what it creates to that user, or the workers could not read or lock it."""
    if os.geteuid() != 0:
        return
    folder = os.stat(directory)
    if folder.st_uid != 0 and os.fstat(fd).st_uid != folder.st_uid:
        os.fchown(fd, folder.st_uid, folder.st_gid)


def bind(sock: socket.socket, path: Path) -> None:
    """Bind a unix socket in the directory (handed over like every file: `_hand_over`)."""
    sock.bind(str(path))
    if os.geteuid() == 0:
        folder = os.stat(path.parent)
        if folder.st_uid != 0:
            os.chown(path, folder.st_uid, folder.st_gid, follow_symlinks=False)


def token_of(name: str, suffix: str) -> str | None:
    """The process token of an otel-kit file name `<token><suffix>`; None for any other name
    (another program's `app.json` or `other.sock` is neither read, asked nor removed)."""
    token = name.removesuffix(suffix)
    return token if token != name and _TOKEN.fullmatch(token) else None


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
        if token_of(entry.name, ".sock") and alive(entry.path)
    ]


def reset(directory: Path) -> None:
    """Remove what earlier runs left (call only when no process is live): otel-kit's own
    files, nothing else."""
    for entry in os.scandir(directory):
        if OWN_NAME.fullmatch(entry.name):
            unlink(entry.path)


def remove_created(directory: Path, run_id: str) -> None:
    """At the end of the run that created the directory (its marker holds `run_id`): remove
    otel-kit's files, and the directory if nothing else is left in it."""
    try:
        if not run_id or read_file(directory / OWNED_MARKER).decode() != run_id:
            return  # not created by this run: a directory someone gave keeps everything
    except (OSError, UnicodeDecodeError):
        return
    reset(directory)
    unlink(directory / OWNED_MARKER)
    with contextlib.suppress(OSError):  # not empty: someone else's files stay, and the folder
        directory.rmdir()


@contextlib.contextmanager
def directory_lock(directory: Path, timeout: float) -> Iterator[None]:
    """Exclusive lock between processes (flock) around archive folding and final snapshots."""
    fd = os.open(directory / "lock", _OPEN | os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _hand_over(fd, directory)
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


def _write_new(path: Path, data: bytes) -> Path:
    """`data` in a new file (mode 0600) at a random name next to `path`; that name."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, _NEW | os.O_WRONLY, 0o600)
    try:
        _hand_over(fd, path.parent)
        with os.fdopen(fd, "wb", closefd=False) as file:
            file.write(data)
    except BaseException:
        unlink(tmp)
        raise
    finally:
        os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename (a reader sees the old or the new file)."""
    tmp = _write_new(path, data)
    try:
        os.replace(tmp, path)  # replaces a link at `path`, never writes through it
    except BaseException:
        unlink(tmp)
        raise


def read_file(path: Path) -> bytes:
    """A regular file's content, never through a symbolic link (OSError then)."""
    fd = os.open(path, _OPEN | os.O_RDONLY | os.O_NONBLOCK)  # NONBLOCK: a FIFO cannot hang us
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {path}")
        return file.read()


def unlink(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _read_uuid(path: Path) -> str | None:
    """instance.id's UUID; None if missing, not a regular file or not a UUID."""
    try:
        return str(uuid.UUID(read_file(path).decode("ascii").strip()))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def instance_id(directory: Path) -> str:
    """One `service.instance.id` for every process of the run: target_info stays one series."""
    path = directory / "instance.id"
    for _attempt in range(3):
        found = _read_uuid(path)
        if found is not None:
            return found
        if os.path.lexists(path):
            unlink(path)  # a link or garbage: never shown on /metrics
        tmp = _write_new(path, str(uuid.uuid4()).encode())
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # atomic create-if-missing, with its content
        finally:
            unlink(tmp)
    return str(uuid.uuid4())  # another process keeps replacing it: this one's own


MAX_WORKERS = 1024  # worker slots: far more processes than one service runs at once


def claim_worker(directory: Path) -> tuple[int, int]:
    """The lowest worker slot no live process holds, and the descriptor holding it (a `flock`
    on `worker.<n>.lock`, released by the kernel when the process ends, so a recycled
    worker's successor takes its number). Per-worker series are then bounded by how many
    processes run at once, not by how many ever ran. Keep the descriptor open."""
    for slot in range(MAX_WORKERS):
        fd = os.open(directory / f"worker.{slot}.lock", _OPEN | os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _hand_over(fd, directory)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return slot, fd
    raise OSError(f"otel-kit: all {MAX_WORKERS} worker slots of {directory} are taken")


def claim_port(directory: Path) -> int | None:
    """The descriptor holding the port lock for the one process that serves the metrics port
    (no EADDRINUSE in workers); None in every other process. Keep it open while serving."""
    fd = os.open(directory / "port.lock", _OPEN | os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _hand_over(fd, directory)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def touch(directory: Path, token: str, worker: int) -> None:
    """Keep the files a live process relies on recent: /tmp cleaners (systemd-tmpfiles on some
    distributions) remove files unchanged for days, and a missing socket would make the
    process look dead."""
    names = (f"{token}.sock", f"worker.{worker}.lock", "lock", "port.lock", "instance.id")
    for name in (*names, OWNED_MARKER):
        with contextlib.suppress(OSError):
            os.utime(directory / name, follow_symlinks=False)
