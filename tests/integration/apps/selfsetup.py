"""An app that calls setup_metrics(app) itself; under `otel-kit run` it must count once."""

import os

from fastapi import FastAPI

from otel_kit import setup_metrics

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id, "pid": os.getpid()}


setup_metrics(app)
