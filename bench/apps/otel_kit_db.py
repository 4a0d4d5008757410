"""The realistic route with otel-kit: HTTP, SQLAlchemy and cache-lookup metrics."""

from bare_db import cache_get, create_app  # bench/apps is uvicorn's --app-dir

from otel_kit import cache_metrics, setup_metrics

app = create_app(cache_metrics("local")(cache_get))
setup_metrics(app)
