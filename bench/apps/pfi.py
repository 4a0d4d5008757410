"""prometheus-fastapi-instrumentator with its defaults."""

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


Instrumentator().instrument(app).expose(app)
