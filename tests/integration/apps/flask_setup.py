"""The Flask app of `flask_plain.py`, measured the one-line way: `setup_metrics(app)`."""

from flask_plain import app

from otel_kit import setup_metrics

setup_metrics(app, excluded_urls="^/healthz$")

__all__ = ["app"]
