"""20 routes, no otel-kit code (run under `otel-kit run`), or with `setup_metrics` (SETUP=1)."""

import os

from fastapi import FastAPI, HTTPException

app = FastAPI()


def _route(i: int) -> None:
    @app.get(f"/r{i}/{{item_id}}")
    async def handler(item_id: int) -> dict[str, int]:
        if item_id % 10 == 0:
            raise HTTPException(404)
        return {"route": i, "id": item_id}


for _i in range(20):
    _route(_i)

if os.environ.get("SETUP") == "1":
    from otel_kit import setup_metrics

    setup_metrics(app)
