"""The trivial Flask app with otel-kit's one line."""

from wsgi_flask_bare import app

from otel_kit import setup_metrics

setup_metrics(app)
