"""The realistic route with otel-kit: HTTP, SQLAlchemy and cache-lookup metrics."""

import os

from bare_db import cache_get, create_app  # bench/apps is uvicorn's --app-dir

from otel_kit import cache_metrics, setup_metrics

# bench/instructions.py's HTTP-only breakdown leaves the lookup undecorated.
measured = os.environ.get("BENCH_NO_CACHE_METRICS") != "1"
app = create_app(cache_metrics("local")(cache_get) if measured else cache_get)
setup_metrics(app)
