"""The type of the `make_handle` fixture (tests/conftest.py), for the tests' annotations."""

from __future__ import annotations

from typing import Any, Protocol

from otel_kit import MetricsHandle


class MakeHandle(Protocol):
    def __call__(self, app: Any = None, **settings: Any) -> MetricsHandle:
        """`MetricsHandle.create(app, **settings)`, shut down after the test; without an app,
        one nothing calls (no metrics port unless `prometheus_port` is given)."""
        ...
