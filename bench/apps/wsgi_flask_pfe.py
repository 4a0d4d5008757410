"""The trivial Flask app with prometheus_flask_exporter's defaults (its own /metrics)."""

from prometheus_flask_exporter import PrometheusMetrics
from wsgi_flask_bare import app

PrometheusMetrics(app)
