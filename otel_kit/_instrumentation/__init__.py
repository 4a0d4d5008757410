"""One module per integration; each adds only what upstream lacks.

An integration module imports its library at the top (so a missing library is an ImportError
naming it) and defines `instrument(integration) -> Callable[[], None]`, which starts measuring every
client/engine of that library, old and new, and returns a function that stops it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.sdk.metrics import MeterProvider

from otel_kit._instruments import FastHistogram, FastInstruments, FastSum
from otel_kit.catalogue import MetricSpec
from otel_kit.config import Settings

__all__ = ["INTEGRATIONS", "IntegrationContext", "error_type", "instrument_all"]

_log = logging.getLogger("otel_kit")

# name (as in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS) -> (module, library it needs, extra)
INTEGRATIONS: dict[str, tuple[str, str, str]] = {
    "sqlalchemy": ("otel_kit._instrumentation.sqlalchemy", "sqlalchemy", "sqlalchemy"),
    "redis": ("otel_kit._instrumentation.redis", "redis", "redis"),
    "httpx": ("otel_kit._instrumentation.httpx", "httpx", "httpx"),
    "runtime": ("otel_kit._instrumentation.runtime", "psutil", "runtime"),
}


@dataclass(frozen=True)
class IntegrationContext:
    """What an integration gets: settings, the provider (for SDK instruments) and fast ones."""

    settings: Settings
    meter_provider: MeterProvider
    fast: FastInstruments

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


def instrument_all(integration: IntegrationContext) -> list[Callable[[], None]]:
    """Instrument every installed, enabled integration; never raises."""
    undo: list[Callable[[], None]] = []
    for name, (module_name, library, extra) in INTEGRATIONS.items():
        if name in integration.settings.disabled_instrumentations:
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
            undo.append(module.instrument(integration))
        except Exception:
            _log.exception(
                "otel-kit: %s instrumentation failed; the application is unaffected", name
            )
    return undo
