"""OpenTelemetry contrib: FastAPIInstrumentor + SDK MeterProvider + PrometheusMetricReader.

FastAPI's own native telemetry is switched off so that only contrib measures requests.
"""

import os

from fastapi import FastAPI
from fastapi.responses import Response
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# Stable HTTP semantic conventions: http.server.request.duration in seconds. Read when the app
# is instrumented, so setting it here (before instrument_app) is enough.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))

try:
    app = FastAPI(telemetry={"metrics": False, "tracing": False, "logs": False})
except TypeError:  # FastAPI < 0.165: no native telemetry to switch off
    app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@app.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    # PrometheusMetricReader registers itself in prometheus_client's default registry.
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


FastAPIInstrumentor.instrument_app(app)
