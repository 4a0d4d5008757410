"""One app, the same requests, two ways of instrumenting it: `otel-kit run uvicorn` (the
middleware wraps the built stack, outside Starlette's ServerErrorMiddleware, which sends the 500
before it re-raises) and `setup_metrics(app)` in-process. The labels must be the same; before
issue 19 the first gave `error_type="500"` for an unhandled exception, the second its class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.exposition import samples
from tests.handles import MakeHandle
from tests.integration.otel_kit_run import otel_kit_run, uvicorn
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration

COUNT = "http_server_request_duration_seconds_count"
APP = """
from fastapi import FastAPI, HTTPException

app = FastAPI()


@app.get("/boom/{n}")
async def boom(n: int) -> None:
    raise ValueError("broken")


@app.get("/unavailable")
async def unavailable() -> None:
    raise HTTPException(503)


@app.get("/ok")
async def ok() -> dict[str, str]:
    return {"ok": "yes"}
"""
REQUESTS = [("/boom/1", 500), ("/boom/2", 500), ("/unavailable", 503), ("/ok", 200)]


def counts(text: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (name, labels), v in samples(text).items() if name == COUNT}


async def in_process(make_handle: MakeHandle) -> dict[frozenset[tuple[str, str]], float]:
    namespace: dict[str, Any] = {}
    exec(compile(APP, "errors_app.py", "exec"), namespace)
    app = namespace["app"]
    make_handle(app, disabled_instrumentations="sqlalchemy,redis,httpx,runtime")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        for path, status in REQUESTS:
            assert (await c.get(path)).status_code == status
        return counts((await c.get("/metrics")).text)


async def test_same_labels_under_run_and_setup_metrics(
    tmp_path: Path, make_handle: MakeHandle
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "errors_app.py").write_text(APP)
    port = free_port()
    with otel_kit_run(tmp_path, uvicorn(port, app="errors_app:app"), port=port) as run:
        for path, status in REQUESTS:
            assert run.get(path).status_code == status
        # an exception is recorded when it leaves the app, just after its 500 was sent
        text = run.wait_for(lambda t: sum(counts(t).values()) >= len(REQUESTS), "4 requests")
    assert counts(text) == await in_process(make_handle)
    boom = {
        "http_request_method": "GET",
        "http_route": "/boom/{n}",
        "http_response_status_code": "500",
        "error_type": "ValueError",
        "url_scheme": "http",
        "network_protocol_version": "1.1",
    }
    assert counts(text)[frozenset(boom.items())] == 2
