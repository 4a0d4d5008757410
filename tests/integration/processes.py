"""Real processes and servers on loopback for the tests, started and stopped (by PID) by them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM `process` by PID and wait; SIGKILL it if it has not exited within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_ready(
    process: subprocess.Popen[bytes], url: str, log: Path, what: str, timeout: float = 30
) -> None:
    """Poll until GET `url` answers 200; fail with `log` if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not _answers_200(url):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not become ready within {timeout:g} s:\n{log.read_text()}")
        time.sleep(0.1)


def _answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port (its base URL) for the block."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = False  # server_close() waits for every handler: none outlives it
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@contextmanager
def server(
    args: Sequence[str],
    port: int,
    env: dict[str, str] | None = None,
    ready_path: str = "/metrics",
    *,
    python: str = sys.executable,
    cwd: Path = ROOT,
) -> Iterator[str]:
    """Start `python args...` (in `cwd`), wait until it answers on `port`, stop it afterwards.

    Its output goes to a temporary file (a pipe nobody reads would block a chatty server).
    """
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [python, *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")
                    pytest.fail(f"server exited with {process.returncode}:\n{output}")
                try:
                    # No short timeout: a probe of a counted route that the client gave up on
                    # while a busy server still answered it would be counted once more.
                    httpx.get(base + ready_path, timeout=max(1.0, deadline - time.monotonic()))
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"server on port {port} did not answer within 30 s")
                    time.sleep(0.1)
            yield base
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
