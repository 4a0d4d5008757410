"""otel-kit: one line, metrics served on GET /metrics."""

from fastapi import FastAPI

from otel_kit import setup_metrics

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


setup_metrics(app)
