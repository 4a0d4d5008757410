"""Defects found on public FastAPI apps (issue 19), in-process through httpx's ASGI transport:
the same labels whether otel-kit was set up before the app started or wrapped its built stack
(as `otel-kit run` does), mounted `StaticFiles` and sub-apps labelled with the mount's template,
and `http_route` without the ASGI root path on every FastAPI version."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from prometheus_client import REGISTRY, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from otel_kit._setup import wrap_built_stack
from otel_kit.config import ConfigError
from tests.exposition import samples, value
from tests.handles import MakeHandle

COUNT = "http_server_request_duration_seconds_count"
ONLY_HTTP = {"disabled_instrumentations": "sqlalchemy,redis,httpx,runtime"}
# what every request through httpx's ASGI transport carries
HTTP_1_1 = {"url_scheme": "http", "network_protocol_version": "1.1"}


def client(app: Any, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def counts(text: str) -> dict[frozenset[tuple[str, str]], float]:
    """{label set: count} of the request duration histogram."""
    return {labels: v for (name, labels), v in samples(text).items() if name == COUNT}


def failing_app() -> FastAPI:
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

    return app


async def failing_requests(app: Any) -> str:
    async with client(app) as c:
        for n in range(3):
            assert (await c.get(f"/boom/{n}")).status_code == 500
        assert (await c.get("/unavailable")).status_code == 503
        assert (await c.get("/ok")).status_code == 200
        response = await c.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_error_type_is_the_exception_class_also_around_the_built_stack(
    make_handle: MakeHandle,
) -> None:
    """Item 2: set up before start, the middleware is inside Starlette's ServerErrorMiddleware
    and sees the exception; wrapping the built stack (`otel-kit run`, or setup from a lifespan
    handler) puts it outside, where the 500 arrives before the exception. Same labels."""
    inside = failing_app()
    make_handle(inside, **ONLY_HTTP)
    outside = failing_app()
    handle = make_handle(**ONLY_HTTP)
    outside.middleware_stack = wrap_built_stack(handle, outside, outside.build_middleware_stack())

    texts = [await failing_requests(inside), await failing_requests(outside)]
    for text in texts:
        route = {"http_request_method": "GET", "http_route": "/boom/{n}", **HTTP_1_1}
        assert counts(text) == {
            frozenset(
                {**route, "http_response_status_code": "500", "error_type": "ValueError"}.items()
            ): 3,
            frozenset(
                {
                    "http_request_method": "GET",
                    "http_route": "/unavailable",
                    "http_response_status_code": "503",
                    "error_type": "503",
                    **HTTP_1_1,
                }.items()
            ): 1,
            frozenset(
                {
                    "http_request_method": "GET",
                    "http_route": "/ok",
                    "http_response_status_code": "200",
                    **HTTP_1_1,
                }.items()
            ): 1,
        }
        # the deferred record still ends the request: nothing left active
        assert value(text, "http_server_active_requests") == 0
    assert counts(texts[0]) == counts(texts[1])


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def test_mounted_static_files_and_sub_app_carry_the_mount_template(
    make_handle: MakeHandle, tmp_path: Path
) -> None:
    """Item 3: a file found or not under a mounted StaticFiles is `/static/{path}`, as is an
    unmatched path in a mounted app (`/sub/{path}`); a 404 outside any mount has no label."""
    (tmp_path / "app.js").write_text("console.log(1)")
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.mount("/static", StaticFiles(directory=tmp_path), name="static")
    app.mount("/sub", Starlette(routes=[Route("/hello", hello)]))
    make_handle(app, **ONLY_HTTP)
    async with client(app) as c:
        for path, status in [
            ("/static/app.js", 200),
            ("/static/app.js", 200),
            ("/static/missing.css", 404),
            ("/static/deep/er/missing.png", 404),
            ("/sub/hello", 200),
            ("/sub/nope", 404),
            ("/items/1", 200),
            ("/nope", 404),
            ("/staticx", 404),
        ]:
            assert (await c.get(path)).status_code == status, path
        text = (await c.get("/metrics")).text

    def key(status: int, route: str | None = None) -> frozenset[tuple[str, str]]:
        labels = {
            "http_request_method": "GET",
            "http_response_status_code": str(status),
            **HTTP_1_1,
        }
        if route is not None:
            labels["http_route"] = route
        return frozenset(labels.items())

    assert counts(text) == {
        key(200, "/static/{path}"): 2,
        key(404, "/static/{path}"): 2,
        key(200, "/sub/hello"): 1,
        key(404, "/sub/{path}"): 1,
        key(200, "/items/{item_id}"): 1,
        key(404): 2,
    }


def routed_app(telemetry: dict[str, Any] | None) -> FastAPI:
    app = FastAPI() if telemetry is None else FastAPI(telemetry=telemetry)  # type: ignore[arg-type,call-arg,unused-ignore]
    v1 = APIRouter(prefix="/v1")

    @v1.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app.include_router(v1)
    sub = FastAPI()

    @sub.get("/hello/{name}")
    async def greet(name: str) -> dict[str, str]:
        return {"name": name}

    app.mount("/sub", sub)
    app.mount("/plain", Starlette(routes=[Route("/hello", hello)]))
    return app


def fastapi_tracing() -> dict[str, Any]:
    """FastAPI's own telemetry on (it then makes the request record, with the root path)."""
    pytest.importorskip("fastapi.telemetry")
    from opentelemetry.sdk.trace import TracerProvider

    return {"tracer_provider": TracerProvider()}


@pytest.mark.parametrize("tracing", [False, True], ids=["otel-kit-record", "fastapi-tracing"])
@pytest.mark.parametrize("root_path", ["", "/api"])
async def test_route_template_never_includes_the_root_path(
    make_handle: MakeHandle, root_path: str, tracing: bool
) -> None:
    """Item 6: behind `--root-path` (the ASGI scope's root_path, the path starting with it),
    the label is the template as the app declares it, on every FastAPI version."""
    app = routed_app(fastapi_tracing() if tracing else None)
    make_handle(app, **ONLY_HTTP)
    prefix = root_path.rstrip("/")
    async with client(app, root_path=root_path) as c:
        for path in ["/v1/things/1", "/v1/things/2", "/sub/hello/bob", "/plain/hello", "/sub/x"]:
            response = await c.get(prefix + path)
            assert response.status_code == (404 if path == "/sub/x" else 200), path
        text = (await c.get(prefix + "/metrics")).text
    routes = {dict(labels).get("http_route"): v for labels, v in counts(text).items()}
    assert routes == {
        "/v1/things/{thing_id}": 2,
        "/sub/hello/{name}": 1,
        "/plain/hello": 1,
        "/sub/{path}": 1,
    }


@pytest.fixture
def app_counter() -> Iterator[Counter]:
    """A prometheus_client counter of the app's own, in the default REGISTRY, at 3; and a gauge
    there with a name otel-kit uses. Both unregistered afterwards."""
    counter = Counter("legacy_orders", "Orders counted by the app itself", ["kind"])
    clash = Gauge("http_server_active_requests", "The app's own gauge of that name")
    counter.labels(kind="card").inc(3)
    clash.set(42)
    yield counter
    REGISTRY.unregister(counter)
    REGISTRY.unregister(clash)


def app_with_own_metrics_route() -> FastAPI:
    """An app serving prometheus_client's default registry on /metrics itself, as apps using
    prometheus-fastapi-instrumentator or a hand-written route do."""
    app = FastAPI()

    @app.get("/metrics")
    async def own_metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(REGISTRY).decode())

    @app.get("/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def test_own_metrics_route_hidden_is_reported_with_both_ways_out(
    make_handle: MakeHandle, app_counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 4, by default: otel-kit's endpoint answers /metrics, and says so naming the two
    settings that keep the app's metrics reachable."""
    app = app_with_own_metrics_route()
    make_handle(app, **ONLY_HTTP)
    async with client(app) as c:
        text = (await c.get("/metrics")).text
    assert "legacy_orders" not in text
    hidden = [r.getMessage() for r in caplog.records if "hides the app's own route" in r.message]
    assert len(hidden) == 1
    assert "metrics_path" in hidden[0] and "metrics_include_default_registry" in hidden[0]


async def test_default_registry_served_beside_otel_kit_metrics(
    make_handle: MakeHandle, app_counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 4, metrics_include_default_registry: the app's prometheus_client counter appears
    once with its value; a family of a name otel-kit uses is otel-kit's alone."""
    app = app_with_own_metrics_route()
    make_handle(app, metrics_include_default_registry=True, **ONLY_HTTP)
    async with client(app) as c:
        await c.get("/ok")
        text = (await c.get("/metrics")).text
        app_counter.labels(kind="cash").inc()
        again = (await c.get("/metrics")).text
    assert text.count("# TYPE legacy_orders_total counter") == 1
    assert value(text, "legacy_orders_total", kind="card") == 3
    assert value(again, "legacy_orders_total", kind="cash") == 1
    assert value(text, COUNT, http_route="/ok") == 1
    # otel-kit's active-requests gauge (0: the scrape itself is not counted), not the app's 42
    assert text.count("# TYPE http_server_active_requests gauge") == 1
    assert value(text, "http_server_active_requests") == 0
    assert not [r for r in caplog.records if "hides the app's own route" in r.message]
    skipped = [r.getMessage() for r in caplog.records if "not served" in r.message]
    assert skipped == [
        "otel-kit: prometheus_client's http_server_active_requests not served: otel-kit "
        "exports a metric of that name (metrics_include_default_registry)"
    ]


def test_default_registry_setting_refuses_bad_values(
    make_handle: MakeHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as bad:
        make_handle(metrics_include_default_registry="sometimes")
    assert "metrics_include_default_registry" in str(bad.value)
    assert "OTEL_KIT_METRICS_INCLUDE_DEFAULT_REGISTRY" in str(bad.value)
    assert "true, false" in str(bad.value)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    # several processes without prometheus_client's multiprocess mode: one worker's values
    with pytest.raises(ConfigError, match="set PROMETHEUS_MULTIPROC_DIR"):
        make_handle(metrics_include_default_registry=True, multiproc_dir=str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="is no directory"):
        make_handle(metrics_include_default_registry=True)


def test_default_registry_in_prometheus_client_multiprocess_mode(
    make_handle: MakeHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, the app's metrics are read from there, so every worker's
    count is in (here one other process's)."""
    worker = (
        "from prometheus_client import Counter\n"
        "Counter('legacy_jobs', 'Jobs', ['queue']).labels(queue='mail').inc(4)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    handle = make_handle(metrics_include_default_registry=True, **ONLY_HTTP)
    text = handle.render().decode()
    assert text.count("# TYPE legacy_jobs_total counter") == 1
    assert value(text, "legacy_jobs_total", queue="mail") == 4
