"""otel-kit: production-grade metrics for Python web services. OpenTelemetry inside,
Prometheus outside.

    from otel_kit import setup_metrics
    setup_metrics(app)   # GET /metrics on the app
"""

from otel_kit._setup import MetricsHandle, setup_metrics
from otel_kit.cache import cache_metrics, record_cache_lookup
from otel_kit.config import ConfigError, Settings

__all__ = [
    "ConfigError",
    "MetricsHandle",
    "Settings",
    "__version__",
    "cache_metrics",
    "record_cache_lookup",
    "setup_metrics",
]

__version__ = "0.1.0"
