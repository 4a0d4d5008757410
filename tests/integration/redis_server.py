"""A real redis-server on loopback, stopped by PID: the session's `redis_server` fixture
(tests/integration/conftest.py) is one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.processes import free_port, terminate


def _answers_ping(port: int) -> bool:
    # A raw socket, not redis-py: the client library is what the tests measure.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on a free port; retried because the port may be taken meanwhile."""
    log = directory / "redis.log"  # a file, not a pipe: nobody drains a pipe during the session
    for _attempt in range(3):
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*args, "no", "--dir", str(directory)], cwd=directory, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                return process, port
            time.sleep(0.05)
        terminate(process)
    pytest.fail(f"redis-server did not answer PING within 15 s:\n{log.read_text()}")


@contextmanager
def running_redis_server(directory: Path) -> Iterator[int]:
    """The port of a redis-server started in `directory` for the block (stopped by PID)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found; install it with: apt-get install redis-server")
    process, port = _start(binary, directory)
    try:
        yield port
    finally:
        terminate(process)
