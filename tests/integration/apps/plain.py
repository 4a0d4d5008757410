"""A FastAPI app without a line of otel-kit: only `otel-kit run` measures it.

It also records through the OTel API, as an application with its own metrics would:
`app.imports` (5 per import of this module: with gunicorn --preload only the arbiter imports
it, and forked workers must not count it again), `app.requests` per request, and
`app.workers`, +1 when a worker starts serving and never decremented, so the merged value is
the number of live workers only if dead workers' gauges are dropped.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry import metrics
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

meter = metrics.get_meter("tests.apps.plain")
meter.create_counter("app.imports").add(5)
requests = meter.create_counter("app.requests")
workers = meter.create_up_down_counter("app.workers")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    workers.add(1)
    yield


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def create_app() -> FastAPI:
    """The app; `uvicorn --factory plain:create_app` calls this itself."""
    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        requests.add(1)
        return {"id": item_id, "pid": os.getpid()}

    # A Starlette app mounted inside: instrumented too, each request must still count once.
    app.mount("/sub", Starlette(routes=[Route("/hello", hello)]))
    return app


app = create_app()
