"""A real Prometheus server on loopback, stopped by PID: Debian's `prometheus` (2.x), or the
Prometheus 3 that .ci/build-prometheus builds (tests.go_tools.prometheus3)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.processes import free_port, terminate, wait_until_ready


@contextmanager
def prometheus(
    config: str, directory: Path, binary: str | None = None, args: Sequence[str] = ()
) -> Iterator[str]:
    """Start Prometheus (`binary`, else Debian's) with `config` (prometheus.yml text) and extra
    `args`; yield its base URL once ready."""
    binary = binary or shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found; install it with: apt-get install prometheus")
    (directory / "prometheus.yml").write_text(config)
    port = free_port()
    log = directory / "prometheus.log"  # a file: nobody drains a pipe while the test runs
    args = [
        binary,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        *args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=directory, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, f"{base}/-/ready", log, "prometheus")
        yield base
    finally:
        terminate(process)


def query(base: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """The instant vector `expr` evaluates to (at `at`, else now); a PromQL error fails."""
    params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
    response = httpx.get(f"{base}/api/v1/query", params=params, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(base: str, expr: str, timeout: float = 20) -> list[dict[str, Any]]:
    """Poll until `expr` returns data (bounded)."""
    deadline = time.monotonic() + timeout
    while not (result := query(base, expr)):
        if time.monotonic() > deadline:
            pytest.fail(f"no data for {expr} within {timeout} s")
        time.sleep(0.2)
    return result


def _seconds(rfc3339: str) -> float:
    """Prometheus' RFC 3339 timestamps (nanoseconds, Z or offset) as epoch seconds."""
    match = re.fullmatch(r"(.+T[\d:]+)(?:\.(\d+))?(Z|[+-][\d:]+)", rfc3339)
    assert match, rfc3339
    base, fraction, zone = match.groups()
    stamp = f"{base}.{(fraction or '0')[:6]}{'+00:00' if zone == 'Z' else zone}"
    return datetime.fromisoformat(stamp).timestamp()


def wait_for_rules(base: str, after: float, timeout: float = 20) -> None:
    """Poll until every rule group has last been evaluated later than `after` (epoch s)."""
    deadline = time.monotonic() + timeout
    while True:
        groups = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        if groups and all(_seconds(g["lastEvaluation"]) > after for g in groups):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the rule groups were not evaluated after {after} within {timeout} s")
        time.sleep(0.2)
