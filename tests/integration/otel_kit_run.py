"""`otel-kit run ...` for the tests: `otel_kit_run()` starts it in a copy of the apps in
tests/integration/apps/, in its own session (process group), until it answers, and stops the
whole process group by its PID; its `Run` sends real HTTP requests on 127.0.0.1 over fresh
connections (so they spread over the workers) and scrapes. FORMS: every server form."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

APPS = Path(__file__).parent / "apps"
RUN_CLI = Path(__file__).parent / "run_cli.py"
VENV_BIN = str(Path(sys.executable).parent)


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    cwd: Path
    pids: set[int] = field(default_factory=set)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def scrape(self, url: str | None = None) -> str:
        for attempt in range(3):
            try:
                response = httpx.get(url or self.base + "/metrics", timeout=10)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if attempt == 2:  # a recycled worker dropped it (see below); once is plenty
                    raise
        assert response.status_code == 200, response.text
        return response.text

    def get(self, path: str) -> httpx.Response:
        # A fresh connection per request: the kernel hands it to whichever worker accepts.
        return httpx.get(self.base + path, headers={"Connection": "close"}, timeout=10)

    def requests(self, count: int, start: int = 0, concurrency: int = 8) -> None:
        """`count` GET /items/{id}, `concurrency` at a time; remembers which PIDs answered."""

        def one(i: int) -> int:
            response = self.get(f"/items/{i}")
            assert response.status_code == 200, response.text
            pid: int = response.json()["pid"]
            return pid

        with ThreadPoolExecutor(concurrency) as pool:
            self.pids.update(pool.map(one, range(start, start + count)))

    def requests_to_recycling_workers(self, count: int, start: int) -> int:
        """Like `requests`, one at a time, and returns how many were answered. A worker leaving
        after its last request closes the connections it accepted but had not read yet (gunicorn
        and uvicorn do that without otel-kit too, ~1 in 100 here): those requests never
        reached the application and must not be counted."""
        answered = 0
        for i in range(start, start + count):
            try:
                response = self.get(f"/items/{i}")
            except (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError):
                continue
            assert response.status_code == 200, response.text
            self.pids.add(response.json()["pid"])
            answered += 1
        return answered

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.scrape()
            if check(text):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not seen within {timeout} s:\n{text}\n{self.output()}")
            time.sleep(0.2)


def copy_apps(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for source in APPS.glob("*.py"):
        if source.name != "__init__.py":
            shutil.copy(source, directory / source.name)
    return directory


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the run's process group (servers shut down gracefully), SIGKILL if needed;
    fails if a process of the group outlives the command by more than a few seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("processes of the run outlived it")
        time.sleep(0.05)


@contextmanager
def otel_kit_run(
    tmp_path: Path,
    command: Sequence[str],
    *,
    options: Sequence[str] = (),
    env: dict[str, str] | None = None,
    port: int,
    ready: str = "/metrics",
) -> Iterator[Run]:
    """`otel-kit run [options] command...` in a copy of the apps, until it answers `ready`."""
    cwd = copy_apps(tmp_path / "app")
    log = tmp_path / "server.log"
    environment = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ["PATH"]}
    environment.pop("PYTHONPATH", None)
    environment.update(env or {})
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(RUN_CLI), "run", *options, *command],
            cwd=cwd,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = Run(process, f"http://127.0.0.1:{port}", log, cwd)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"exited with {process.returncode}:\n{run.output()}")
            try:
                # No short timeout: `ready` may be a counted route, and a probe the client gave
                # up on while the busy server still answered it would be counted once more.
                remaining = max(1.0, deadline - time.monotonic())
                if httpx.get(run.base + ready, timeout=remaining).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on port {port} within 30 s:\n{run.output()}")
            time.sleep(0.1)
        yield run
    finally:
        stop(process)


def uvicorn(port: int, *args: str, app: str = "plain:app") -> list[str]:
    return ["uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log", *args]


def gunicorn(port: int, *args: str, app: str = "plain:app") -> list[str]:
    worker = "uvicorn.workers.UvicornWorker"
    return [
        "gunicorn",
        "-k",
        worker,
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        *args,
        app,
    ]


FORMS: dict[str, tuple[Callable[[int], list[str]], int]] = {
    # name: (command for a port, worker processes serving the app)
    "uvicorn": (lambda port: uvicorn(port), 1),
    "uvicorn --workers 2": (lambda port: uvicorn(port, "--workers", "2"), 2),
    "uvicorn --factory": (
        lambda port: uvicorn(port, "--factory", app="plain:create_app"),
        1,
    ),
    "gunicorn -w 2": (lambda port: gunicorn(port, "-w", "2"), 2),
    "gunicorn -w 2 --preload": (lambda port: gunicorn(port, "-w", "2", "--preload"), 2),
    "python script.py": (lambda port: ["python", "serve.py", str(port)], 1),
    "python -m module": (lambda port: ["python", "-m", "serve", str(port)], 1),
}
