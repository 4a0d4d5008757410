"""otel-kit: production-grade metrics for Python web services. OpenTelemetry inside,
Prometheus outside.

    from otel_kit import setup_metrics
    setup_metrics(app)   # GET /metrics on the app
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_kit._instrumentation._sql import not_measured
    from otel_kit._setup import MetricsHandle, setup_metrics
    from otel_kit.cache import cache_metrics, record_cache_lookup
    from otel_kit.config import ConfigError, Settings

__all__ = [
    "ConfigError",
    "MetricsHandle",
    "Settings",
    "__version__",
    "cache_metrics",
    "not_measured",
    "record_cache_lookup",
    "setup_metrics",
]

__version__ = "0.1.0"

# Imported on first use: `otel-kit run` puts otel_kit on every Python process's path, and
# helper processes that never set up metrics should not pay for the SDK (0.18 s, 33 MB).
_LAZY = {
    "ConfigError": "otel_kit.config",
    "MetricsHandle": "otel_kit._setup",
    "Settings": "otel_kit.config",
    "cache_metrics": "otel_kit.cache",
    "not_measured": "otel_kit._instrumentation._sql",
    "record_cache_lookup": "otel_kit.cache",
    "setup_metrics": "otel_kit._setup",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otel_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
