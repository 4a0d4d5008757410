"""Flask and plain WSGI apps, in-process: a real Flask app (blueprints, a streamed response, an
exception, a method of its own) through Werkzeug's test client, which calls the app and closes
its response as a WSGI server does. Under gunicorn: tests/integration/test_flask.py."""

from __future__ import annotations

import logging
import os
import random
import wsgiref.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import flask_sqlalchemy
import pytest
from flask import Flask, send_file
from opentelemetry.trace import SpanKind
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from werkzeug.test import Client, TestResponse

from otel_kit import _support, setup_metrics
from otel_kit._instrumentation.asgi import MetricsMiddleware
from otel_kit._instrumentation.wsgi import ROUTE_KEY, WSGIMetricsMiddleware
from tests.contrib import recorded_spans
from tests.exposition import samples, series, value
from tests.handles import MakeHandle
from tests.integration.apps.flask_plain import STREAM_PAUSE_S, create_app
from tests.metrics_auth import CHALLENGE_BEARER, TOKEN, bearer

COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"
SUM = "http_server_request_duration_seconds_sum"


def get(client: Client, path: str, method: str = "GET", **kwargs: Any) -> TestResponse:
    """One request, its response read and closed (as a server does once it is sent)."""
    response = client.open(path, method=method, buffered=True, **kwargs)
    response.close()
    return response


def count(text: str, **labels: str) -> float:
    return value(text, COUNT, **labels)


def test_counts_per_route_template(make_handle: MakeHandle) -> None:
    app = create_app()
    handle = make_handle(app)
    client = app.test_client()
    for i in range(5):
        assert get(client, f"/items/{i}").status_code == 200
    for name in ("ann", "bob"):
        assert get(client, f"/api/v1/users/{name}").status_code == 200
    assert get(client, "/api/v1/admin/reports/7", "POST").status_code == 201
    assert get(client, "/cache/k1", "PURGE").status_code == 200
    assert get(client, "/items/1", "PURGE").status_code == 405  # no such route for PURGE
    assert get(client, "/missing/42").status_code == 404
    assert get(client, "/items/not-a-number").status_code == 404
    text = handle.render().decode()

    by_labels = {
        tuple(sorted(labels.items())): v
        for (name, labels_set), v in samples(text).items()
        if name == COUNT
        for labels in [dict(labels_set)]
    }
    common = {"url_scheme": "http", "network_protocol_version": "1.1"}

    def key(**labels: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({**common, **labels}.items()))

    assert by_labels == {
        key(http_request_method="GET", http_route="/items/<int:item_id>",
            http_response_status_code="200"): 5,
        key(http_request_method="GET", http_route="/api/v1/users/<user_id>",
            http_response_status_code="200"): 2,
        key(http_request_method="POST", http_route="/api/v1/admin/reports/<int:report_id>",
            http_response_status_code="201"): 1,
        # PURGE is no method semconv knows: _OTHER, on the app's own route
        key(http_request_method="_OTHER", http_route="/cache/<key>",
            http_response_status_code="200"): 1,
        # unmatched: no http.route at all, never the raw path
        key(http_request_method="_OTHER", http_response_status_code="405"): 1,
        key(http_request_method="GET", http_response_status_code="404"): 2,
    }  # fmt: skip
    # the scrape itself is answered before the app: never counted
    get(client, "/metrics")
    assert count(handle.render().decode()) == 12
    active = series(text, "http_server_active_requests")
    assert {(s["http_request_method"], s["url_scheme"]) for s in active} == {
        ("GET", "http"),
        ("POST", "http"),
        ("_OTHER", "http"),
    }
    assert value(text, "http_server_active_requests") == 0


def test_exception_is_a_500_with_its_class(make_handle: MakeHandle) -> None:
    app = create_app()
    handle = make_handle(app)
    client = app.test_client()
    assert get(client, "/boom").status_code == 500  # Flask's own 500 page
    app.config["PROPAGATE_EXCEPTIONS"] = True  # now the exception reaches the server
    with pytest.raises(ValueError, match="the view failed"):
        get(client, "/boom")
    text = handle.render().decode()
    assert series(text, COUNT) == [
        {
            "http_request_method": "GET",
            "http_route": "/boom",
            "http_response_status_code": "500",
            "error_type": "ValueError",
            "url_scheme": "http",
            "network_protocol_version": "1.1",
        }
    ]
    assert count(text) == 2
    assert value(text, "http_server_active_requests") == 0


def test_streamed_response_is_timed_until_closed(make_handle: MakeHandle) -> None:
    app = create_app()
    handle = make_handle(app)
    response = app.test_client().get("/stream")  # not read yet: the view has returned
    chunks = iter(cast(Iterable[bytes], response.response))
    assert next(chunks) == b"chunk 0\n"
    assert count(handle.render().decode()) == 0
    assert value(handle.render().decode(), "http_server_active_requests") == 1
    assert b"".join(chunks) == b"chunk 1\nchunk 2\nchunk 3\n"
    assert count(handle.render().decode()) == 0  # every chunk sent, not closed yet
    response.close()
    text = handle.render().decode()
    assert count(text, http_route="/stream", http_response_status_code="200") == 1
    assert value(text, SUM) >= 3 * STREAM_PAUSE_S
    assert value(text, BUCKET, http_route="/stream", le="0.25") == 0
    assert value(text, BUCKET, http_route="/stream", le="+Inf") == 1
    assert value(text, "http_server_active_requests") == 0


def test_failure_while_streaming_keeps_the_status_sent(make_handle: MakeHandle) -> None:
    app = Flask(__name__)

    @app.get("/feed")
    def feed() -> Any:
        def chunks() -> Iterable[bytes]:
            yield b"first\n"
            raise ConnectionResetError("the upstream went away")

        return app.response_class(chunks())

    handle = make_handle(app)
    response = app.test_client().get("/feed")
    with pytest.raises(ConnectionResetError):
        b"".join(cast(Iterable[bytes], response.response))
    response.close()
    assert series(handle.render().decode(), COUNT) == [
        {
            "http_request_method": "GET",
            "http_route": "/feed",
            "http_response_status_code": "200",
            "error_type": "ConnectionResetError",
            "url_scheme": "http",
            "network_protocol_version": "1.1",
        }
    ]


def test_metrics_endpoint_needs_the_token(make_handle: MakeHandle) -> None:
    app = create_app()
    make_handle(app, metrics_bearer_token=TOKEN)
    client = app.test_client()
    get(client, "/items/1")
    refused = get(client, "/metrics")
    assert refused.status_code == 401
    assert refused.headers.get_all("WWW-Authenticate") == [CHALLENGE_BEARER]
    assert "http_server" not in refused.text
    assert get(client, "/metrics", headers=bearer("wrong")).status_code == 401
    allowed = get(client, "/metrics", headers=bearer(TOKEN))
    assert allowed.status_code == 200
    assert count(allowed.text, http_route="/items/<int:item_id>") == 1


def test_excluded_urls_and_cardinality_attack(make_handle: MakeHandle) -> None:
    app = create_app()
    handle = make_handle(app, excluded_urls="^/healthz$")
    client = app.test_client()
    rng = random.Random(18)
    for _ in range(1000):
        path = "/" + "/".join(f"{rng.getrandbits(64):x}" for _ in range(rng.randint(1, 4)))
        get(client, path)
        get(client, f"/items/{rng.getrandbits(32)}")
        get(client, f"/api/v1/users/{rng.getrandbits(64):x}")
    for _ in range(3):
        assert get(client, "/healthz").status_code == 200
    text = handle.render().decode()
    assert count(text) == 3000
    assert count(text, http_response_status_code="404") == 1000
    assert {s.get("http_route") for s in series(text, COUNT)} == {
        None,
        "/items/<int:item_id>",
        "/api/v1/users/<user_id>",
    }
    assert len(series(text, BUCKET)) == 3 * 15  # 14 bounds and +Inf per series
    assert "/healthz" not in text


def test_setup_metrics_measures_a_flask_app_once(global_metrics: None) -> None:
    app = create_app()
    handle = setup_metrics(app)
    assert setup_metrics(app) is handle
    assert handle.instrument_app(app) is app
    get(app.test_client(), "/items/3")
    assert count(handle.render().decode(), http_route="/items/<int:item_id>") == 1


def test_disabled_flask_serves_only_metrics(make_handle: MakeHandle) -> None:
    app = create_app()
    handle = make_handle(app, disabled_instrumentations="flask")
    client = app.test_client()
    get(client, "/items/3")
    assert get(client, "/metrics").status_code == 200
    assert count(handle.render().decode()) == 0


def test_plain_wsgi_app_with_a_route_hook(make_handle: MakeHandle) -> None:
    """Another framework names the route through the environ (ROUTE_KEY)."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path.startswith("/orders/"):
            environ[ROUTE_KEY] = "/orders/{order_id}"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"order"]
        start_response("404 Not Found", [])
        return []

    handle = make_handle()
    wrapped = handle.instrument_app(app)
    assert wrapped is not app
    client = Client(wrapped)
    for i in range(3):
        get(client, f"/orders/{i}")
    get(client, "/nothing")
    text = handle.render().decode()
    assert count(text, http_route="/orders/{order_id}", http_response_status_code="200") == 3
    assert count(text, http_response_status_code="404") == 1
    assert {s.get("http_route") for s in series(text, COUNT)} == {"/orders/{order_id}", None}


def test_opt_in_body_sizes_and_time_to_first_byte(make_handle: MakeHandle) -> None:
    app = create_app()
    handle = make_handle(app, http_body_sizes=True, http_time_to_first_byte=True)
    client = app.test_client()
    get(client, "/api/v1/admin/reports/5", "POST", data=b"x" * 300)
    get(client, "/stream")
    get(client, "/stream", "HEAD")
    with pytest.raises(ValueError):
        app.config["PROPAGATE_EXCEPTIONS"] = True
        get(client, "/boom")
    text = handle.render().decode()
    request_size = "http_server_request_body_size_bytes_sum"
    response_size = "http_server_response_body_size_bytes_sum"
    ttfb = "otel_kit_http_server_time_to_first_byte_seconds_count"
    assert value(text, request_size, http_route="/api/v1/admin/reports/<int:report_id>") == 300
    assert value(text, response_size, http_route="/api/v1/admin/reports/<int:report_id>") == len(
        b'{"report":5}\n'
    )
    assert value(text, response_size, http_route="/stream", http_request_method="GET") == 32
    assert value(text, response_size, http_route="/stream", http_request_method="HEAD") == 0
    # the exception reached the server before any response: no response size, no first byte
    assert value(text, "http_server_response_body_size_bytes_count", http_route="/boom") == 0
    assert value(text, "http_server_request_body_size_bytes_count", http_route="/boom") == 1
    assert value(text, ttfb, http_route="/stream") == 1  # GET only: HEAD sends no body
    assert value(text, ttfb) == 2  # and the POST's


def test_the_servers_file_wrapper_is_kept_and_timed_until_closed(
    make_handle: MakeHandle, tmp_path: Path
) -> None:
    """A response that is the server's `wsgi.file_wrapper` goes to the server unwrapped (so it
    can use sendfile()), and is recorded when the server closes it."""
    data = tmp_path / "report.csv"
    data.write_bytes(b"a,b\n" * 1000)
    app = Flask(__name__)

    @app.get("/reports/<name>")
    def report(name: str) -> Any:
        return send_file(data)

    handle = make_handle(app, http_body_sizes=True)
    environ: dict[str, Any] = {"PATH_INFO": "/reports/q3"}
    wsgiref.util.setup_testing_defaults(environ)
    environ["wsgi.file_wrapper"] = wsgiref.util.FileWrapper
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)

    result = app(environ, start_response)
    assert type(result) is wsgiref.util.FileWrapper
    assert b"".join(result) == data.read_bytes()
    assert count(handle.render().decode()) == 0  # sent, not closed yet
    result.close()
    text = handle.render().decode()
    assert statuses == ["200 OK"]
    assert count(text, http_route="/reports/<name>", http_response_status_code="200") == 1
    assert value(text, "http_server_response_body_size_bytes_sum") == 4000  # Content-Length


def test_flask_sqlalchemy_statements_count_once(make_handle: MakeHandle, tmp_path: Path) -> None:
    """Flask-SQLAlchemy's engine is SQLAlchemy's: measured by the SQLAlchemy integration,
    each statement once, beside the request that ran it."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'shop.db'}"
    db = flask_sqlalchemy.SQLAlchemy(app)

    class Item(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        name = db.Column(db.String(50))

    @app.post("/items/<name>")
    def create(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        db.session.commit()
        return name, 201

    @app.get("/items/<int:item_id>")
    def read(item_id: int) -> str:
        item = db.session.get(Item, item_id)
        return "missing" if item is None else str(item.name)

    with app.app_context():
        db.create_all()  # before the setup: not counted
    handle = make_handle(app)
    client = app.test_client()
    for name in ("a", "b"):
        assert get(client, f"/items/{name}", "POST").status_code == 201
    for item_id in (1, 2, 3):
        assert get(client, f"/items/{item_id}").status_code == 200
    text = handle.render().decode()
    with app.app_context():
        db.engine.dispose()  # its pooled connection, collected later, would warn in another test
    duration = "db_client_operation_duration_seconds_count"
    assert {
        labels["db_operation_name"]: value(text, duration, **labels)
        for labels in series(text, duration)
    } == {"INSERT": 2, "COMMIT": 2, "SELECT": 3, "ROLLBACK": 3}  # the reads' sessions end so
    assert {s["db_system_name"] for s in series(text, duration)} == {"sqlite"}
    assert count(text, http_route="/items/<int:item_id>") == 3
    assert count(text, http_route="/items/<name>", http_request_method="POST") == 2


def test_a_metrics_failure_never_reaches_the_app(
    make_handle: MakeHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app()
    handle = make_handle(app)

    def broken(*args: Any) -> None:
        raise RuntimeError("instrument bug")

    monkeypatch.setattr(_support, "_failures", _support.LogOnce())  # logged once per process
    monkeypatch.setattr(handle._http_duration, "record", broken)
    monkeypatch.setattr(handle._http_active, "up", broken)
    monkeypatch.setattr(handle._http_active, "down", broken)
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="otel_kit"):
        for i in range(3):
            response = get(client, f"/items/{i}")
            assert response.status_code == 200
            assert response.json == {"id": i, "pid": os.getpid()}
        streamed = get(client, "/stream")
        assert streamed.data == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
    assert [r.getMessage() for r in caplog.records if r.name == "otel_kit"] == [
        "otel-kit: recording HTTP server metrics failed; the application is unaffected"
    ]


class ClassWSGIApp:
    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]


class ClassASGIApp:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")


async def function_asgi_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


def test_instrument_app_tells_wsgi_from_asgi(make_handle: MakeHandle) -> None:
    handle = make_handle()
    wsgi = handle.instrument_app(ClassWSGIApp())
    assert isinstance(wsgi, WSGIMetricsMiddleware)
    get(Client(wsgi), "/")
    assert count(handle.render().decode(), http_response_status_code="200") == 1
    for asgi in (ClassASGIApp(), function_asgi_app):
        assert isinstance(handle.instrument_app(asgi), MetricsMiddleware)


def test_an_own_metrics_route_is_reported(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """prometheus_flask_exporter's (or a hand-written) /metrics would be hidden: say so."""
    app = create_app()
    app.add_url_rule("/metrics", "own_metrics", lambda: "mine")
    with caplog.at_level(logging.WARNING, logger="otel_kit"):
        make_handle(app)
    hidden = [r.getMessage() for r in caplog.records if "hides the app's own route" in r.message]
    assert len(hidden) == 1 and "at /metrics;" in hidden[0]
    assert get(app.test_client(), "/metrics").text != "mine"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="otel_kit"):
        make_handle(create_app())  # no route there: no warning
    assert not caplog.records


def test_exemplar_is_the_span_the_app_answered_in(make_handle: MakeHandle) -> None:
    """A tracing middleware inside otel-kit's (as contrib's WSGI one) ends its span before the
    server closes the response: the exemplar is still that request's span."""
    with recorded_spans() as (provider, spans):
        tracer = provider.get_tracer("tests")
        app = create_app()
        inner = app.wsgi_app

        def traced(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            with tracer.start_as_current_span("GET", kind=SpanKind.SERVER):
                return inner(environ, start_response)

        app.wsgi_app = traced  # type: ignore[method-assign]
        handle = make_handle(app, duration_buckets="10")
        response = app.test_client().get("/stream")
        assert response.data == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"
        response.close()
        (span,) = spans.get_finished_spans()
    context = span.get_span_context()
    assert context is not None
    text = handle.render(openmetrics=True).decode()
    (exemplar,) = [
        sample.exemplar
        for family in openmetrics_families(text)  # type: ignore[no-untyped-call]
        for sample in family.samples
        if sample.name == BUCKET and sample.exemplar is not None
    ]
    assert exemplar.labels == {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }
    assert exemplar.value >= 3 * STREAM_PAUSE_S  # the whole request, until closed
