"""Fixtures for every test: a clean OTel environment, otel-kit setups of their own
(`make_handle`) and, for the tests of the global installation only, `global_metrics`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.metrics import _internal as otel_metrics_internal
from starlette.applications import Starlette

import otel_kit._setup
from otel_kit import MetricsHandle
from tests.handles import MakeHandle

# The helper modules' asserts report their values as the test modules' do (none is imported
# yet: pytest rewrites them when the tests import them).
pytest.register_assert_rewrite(
    "tests.check_command",
    "tests.exposition",
    "tests.http_app",
    "tests.metrics_auth",
    "tests.sqlalchemy_workload",
    "tests.integration.otel_kit_run",
    "tests.integration.processes",
)


def _installed_globally() -> bool:
    return (
        otel_kit._setup._current is not None
        or otel_metrics_internal._METER_PROVIDER_SET_ONCE._done
        or otel_metrics_internal._METER_PROVIDER is not None
    )


def _forget_global_setup() -> None:
    """Shut down otel-kit's global handle and forget the global MeterProvider, so the next
    setup_metrics() can set its own.

    The OTel API allows setting it once per process; contrib's test utilities reset these
    same two private globals.
    """
    handle = otel_kit._setup._current
    if handle is not None:
        handle.shutdown()
    otel_metrics_internal._METER_PROVIDER_SET_ONCE._done = False
    otel_metrics_internal._METER_PROVIDER = None


@pytest.fixture(autouse=True)
def otel_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs without the OTEL_* / FASTAPI_OTEL* variables of the shell running pytest,
    and must leave nothing installed globally unless it requested `global_metrics`."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "FASTAPI_OTEL")):
            monkeypatch.delenv(name)
    yield
    # A `global_metrics` the test requested has cleaned up by now: else the test did it.
    if _installed_globally():
        _forget_global_setup()  # not to fail the tests after it too
        pytest.fail(
            "the test installed otel-kit or a MeterProvider globally: request the "
            "`global_metrics` fixture if it tests the global installation, else use `make_handle`"
        )


@pytest.fixture
def global_metrics() -> Iterator[None]:
    """For the tests of the global installation: `setup_metrics()` (idempotence, the global
    MeterProvider, `opentelemetry.metrics.get_meter()`) and the cache helpers, which find the
    global handle. Nothing is installed before the test; afterwards otel-kit's global handle
    is shut down and the global MeterProvider forgotten."""
    _forget_global_setup()
    yield
    _forget_global_setup()


@pytest.fixture
def make_handle() -> Iterator[MakeHandle]:
    """`make_handle(app=None, **settings)`: `MetricsHandle.create(app, **settings)`, a setup of
    the test's own (not installed globally), shut down after the test.

    Without an app the handle serves its metrics on a throwaway Starlette app nothing calls,
    so no metrics port opens unless `prometheus_port` is given; `handle.render()` reads them.
    """
    handles: list[MetricsHandle] = []

    def make(app: Any = None, **settings: Any) -> MetricsHandle:
        handle = MetricsHandle.create(Starlette() if app is None else app, **settings)
        handles.append(handle)
        return handle

    yield make
    for handle in reversed(handles):
        handle.shutdown()
