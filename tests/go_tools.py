"""Binaries the .ci/build-* scripts build from Go modules, cached outside the repository: the
OpenTelemetry Collector of collector/build/manifest.yaml, Prometheus 3 and its promtool. The
scripts build once per machine (minutes) and print the path at once afterwards; OTEL_KIT_OTELCOL
and OTEL_KIT_PROMETHEUS3 name prebuilt binaries instead."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def built(script: str) -> str:
    """The binary `.ci/<script>` builds: the last line it prints. Fails the test naming the
    cause (a module the Go proxy refused, no Go) when it cannot be had."""
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / script)], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        pytest.fail(f".ci/{script} failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def otelcol() -> str:
    return os.environ.get("OTEL_KIT_OTELCOL") or built("build-otelcol")


def prometheus3() -> str:
    return os.environ.get("OTEL_KIT_PROMETHEUS3") or built("build-prometheus")


def promtool3() -> str:
    return str(Path(prometheus3()).with_name("promtool"))
