"""One module per integration; each adds only what upstream lacks.

An integration module imports its library at the top (so a missing library is an ImportError
naming it) and defines `instrument(context) -> Callable[[], None]`, which starts measuring every
client/engine of that library, old and new, and returns a function that stops it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.sdk.metrics import MeterProvider

from otel_kit._fast import FastHistogram, FastMetrics, FastSum
from otel_kit.catalogue import MetricSpec
from otel_kit.config import Settings

__all__ = ["INTEGRATIONS", "Context", "error_type", "instrument_all", "report_failure"]

_log = logging.getLogger("otel_kit")

# name (as in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS) -> (module, library it needs, extra)
INTEGRATIONS: dict[str, tuple[str, str, str]] = {
    "sqlalchemy": ("otel_kit.instrumentation.sqlalchemy", "sqlalchemy", "sqlalchemy"),
    "redis": ("otel_kit.instrumentation.redis", "redis", "redis"),
    "httpx": ("otel_kit.instrumentation.httpx", "httpx", "httpx"),
    "runtime": ("otel_kit.instrumentation.runtime", "psutil", "runtime"),
}


@dataclass(frozen=True)
class Context:
    """What an integration gets: settings, the provider (for SDK instruments) and fast ones."""

    settings: Settings
    meter_provider: MeterProvider
    fast: FastMetrics

    def histogram(self, spec: MetricSpec) -> FastHistogram:
        """A duration histogram with the configured buckets and cardinality limit."""
        return self.fast.histogram(
            spec, self.settings.duration_buckets, self.settings.cardinality_limit
        )

    def sum(self, spec: MetricSpec) -> FastSum:
        return self.fast.sum(spec, self.settings.cardinality_limit)


def error_type(exc: BaseException) -> str:
    """`error.type` for an exception: its class name (`ValueError`, `ConnectError`), bounded
    and the same rule in every integration."""
    return type(exc).__qualname__


_reported: set[str] = set()


def report_failure(integration: str) -> None:
    """Log, once per integration, a failure inside otel-kit's own recording (call it from an
    `except` block). The application's request, query or call goes on unaffected."""
    if integration not in _reported:
        _reported.add(integration)
        _log.exception(
            "otel-kit: recording %s metrics failed; the application is unaffected", integration
        )


def instrument_all(context: Context) -> list[Callable[[], None]]:
    """Instrument every installed, enabled integration; never raises."""
    undo: list[Callable[[], None]] = []
    for name, (module_name, library, extra) in INTEGRATIONS.items():
        if name in context.settings.disabled_instrumentations:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name is None or exc.name.split(".")[0] != library:
                _log.exception("otel-kit: %s instrumentation failed to load", name)
            else:
                _log.info(
                    "otel-kit: %s not installed, not instrumented (pip install 'otel-kit[%s]')",
                    library,
                    extra,
                )
            continue
        try:
            undo.append(module.instrument(context))
        except Exception:
            _log.exception(
                "otel-kit: %s instrumentation failed; the application is unaffected", name
            )
    return undo
