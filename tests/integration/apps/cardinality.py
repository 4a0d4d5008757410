"""The target of tests/integration/test_cardinality.py: otel-kit on a small FastAPI app with a
metric of its own labelled by user input (`tenant.requests{tenant}`), which only the
cardinality limit bounds."""

from fastapi import FastAPI
from opentelemetry import metrics

from otel_kit import setup_metrics

app = FastAPI()
setup_metrics(app, excluded_urls="^/healthz$")
tenant_requests = metrics.get_meter("tests.apps.cardinality").create_counter("tenant.requests")


@app.get("/items/{item_id}")
async def item(item_id: str) -> dict[str, str]:
    return {"id": item_id}


@app.get("/tenants/{tenant}")
async def tenant(tenant: str) -> dict[str, str]:
    tenant_requests.add(1, {"tenant": tenant})
    return {"tenant": tenant}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Excluded from the metrics: what wrk sends once its budget is spent (bench/wrk_mix.lua)."""
    return {"status": "ok"}
