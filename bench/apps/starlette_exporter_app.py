"""starlette-exporter with its defaults."""

from fastapi import FastAPI
from starlette_exporter import PrometheusMiddleware, handle_metrics

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


app.add_middleware(PrometheusMiddleware)
app.add_route("/metrics", handle_metrics)
