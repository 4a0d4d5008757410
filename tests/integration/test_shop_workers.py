"""Both shops under `otel-kit run gunicorn -w 3`, started in the example's own directory
(`app:app`) on a fresh SQLite database: the workers seed it at the same time, every one of them
boots, and the 100 users are there once."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.exposition import series
from tests.integration.otel_kit_run import RUN_CLI, VENV_BIN
from tests.integration.processes import ROOT, free_port

pytestmark = pytest.mark.integration

WORKERS = 3
SHOPS = {
    "fastapi": (ROOT / "examples" / "shop", ["-k", "uvicorn.workers.UvicornWorker"]),
    "flask": (ROOT / "examples" / "flask_shop", []),
}


def live_processes(base: str) -> int:
    """How many processes the one scrape reports (one memory gauge each: workers, arbiter)."""
    try:
        response = httpx.get(base + "/metrics", timeout=5)
    except httpx.TransportError:
        return 0
    return len(series(response.text, "process_memory_usage_bytes"))


@pytest.mark.parametrize("shop", SHOPS)
def test_workers_seed_a_fresh_database_once(tmp_path: Path, shop: str) -> None:
    directory, worker = SHOPS[shop]
    database = tmp_path / "shop.db"
    port = free_port()
    gunicorn = ["gunicorn", "-w", str(WORKERS), *worker, "-b", f"127.0.0.1:{port}", "app:app"]
    env = {
        **os.environ,
        "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
        "SHOP_DATABASE_URL": f"sqlite:///{database}",
    }
    env.pop("PYTHONPATH", None)  # the example finds examples/ itself
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(RUN_CLI), "run", *gunicorn],
            cwd=directory,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # 3 workers importing at once on a busy 2-core machine
        while live_processes(base) < WORKERS + 1:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"not every worker booted:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        for user_id in (1, 100):
            response = httpx.get(f"{base}/users/{user_id}", timeout=10)
            assert response.json() == {"id": user_id, "name": f"user{user_id}", "tier": "pro"}
        assert process.poll() is None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    text = log.read_text(errors="replace")
    assert text.count("Booting worker with pid") == WORKERS, text  # none failed and came back
    assert "Traceback" not in text, text
    with contextlib.closing(sqlite3.connect(database)) as connection:
        users = connection.execute("SELECT id, name FROM users ORDER BY id").fetchall()
    assert users == [(i, f"user{i}") for i in range(1, 101)]
