"""Semantic-conventions details of the HTTP server metrics (issue 15), in-process: `error.type`
as a fully qualified class name, `url.scheme` and `network.protocol.version`, the known methods
(OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS) and the switch of `http.server.active_requests`."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import h11
import httpx
import pytest
import redis

from otel_kit import ConfigError
from otel_kit._instrumentation._context import error_type
from otel_kit.config import load_settings
from tests.exposition import samples, series, value
from tests.handles import MakeHandle
from tests.http_app import client, make_app

COUNT = "http_server_request_duration_seconds_count"
ACTIVE = "http_server_active_requests"
ONLY_HTTP = {"disabled_instrumentations": "sqlalchemy,redis,httpx,runtime"}


async def call(app: Any, method: str = "GET", path: str = "/items/1", **scope: Any) -> int:
    """One request straight into the ASGI app, with the scope a server would give; its status.
    A key given as None is left out of the scope."""
    full = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    full.update(scope)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({k: v for k, v in full.items() if v is not None}, receive, send)
    return int(sent[0]["status"])


def counts(text: str, name: str, *labels: str) -> dict[tuple[str | None, ...], float]:
    """Value per combination of `labels` (None: the label is absent) of the samples `name`."""
    found: dict[tuple[str | None, ...], float] = {}
    for (sample, label_set), number in samples(text).items():
        if sample == name:
            key = tuple(dict(label_set).get(label) for label in labels)
            found[key] = found.get(key, 0) + number
    return found


class PaymentDeclinedError(Exception):
    class Nested(Exception):
        pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("x"), "ValueError"),  # builtins keep their bare name
        (TimeoutError(), "TimeoutError"),
        (httpx.ConnectError("x"), "httpx.ConnectError"),  # the module httpx declares
        (redis.exceptions.ResponseError(), "redis.exceptions.ResponseError"),
        # a private module: the public package that exports the class
        (h11.RemoteProtocolError("x"), "h11.RemoteProtocolError"),
        (concurrent.futures.CancelledError(), "concurrent.futures.CancelledError"),
        (PaymentDeclinedError(), f"{__name__}.PaymentDeclinedError"),
        (PaymentDeclinedError.Nested(), f"{__name__}.PaymentDeclinedError.Nested"),
    ],
)
def test_error_type_is_the_fully_qualified_class_name(exc: BaseException, expected: str) -> None:
    assert error_type(exc) == expected


def test_a_private_module_stays_when_its_package_does_not_export_the_class() -> None:
    hidden = type("Hidden", (Exception,), {"__module__": "h11._util"})
    assert error_type(hidden()) == "h11._util.Hidden"
    top_private = type("Failed", (Exception,), {"__module__": "_pytest.outcomes"})
    assert error_type(top_private()) == "_pytest.outcomes.Failed"


async def test_an_exception_in_the_app_is_its_qualified_class(make_handle: MakeHandle) -> None:
    app = make_app()

    @app.get("/pay")
    async def pay() -> None:
        raise PaymentDeclinedError

    make_handle(app)
    async with client(app) as c:
        assert (await c.get("/pay")).status_code == 500
        assert (await c.get("/boom")).status_code == 500
        text = (await c.get("/metrics")).text
    errors = {(s.get("http_route"), s.get("error_type")) for s in series(text, COUNT)}
    assert errors == {("/pay", f"{__name__}.PaymentDeclinedError"), ("/boom", "ValueError")}
    assert value(text, COUNT, error_type=f"{__name__}.PaymentDeclinedError") == 1


async def test_scheme_and_protocol_version_from_the_scope(make_handle: MakeHandle) -> None:
    app = make_app()
    handle = make_handle(app, **ONLY_HTTP)
    for scheme, version in [
        ("http", "1.1"),
        ("http", "1.1"),
        ("https", "2"),
        ("https", "1.0"),
        ("https", "3"),
        ("gopher", "1.1"),  # a lax server's value: bounded
        ("http", "9.9"),  # no such version: no label rather than an unbounded one
        (None, None),  # ASGI: no scheme means http; no http_version, no label
    ]:
        assert await call(app, scheme=scheme, http_version=version) == 200
    text = handle.render().decode()
    assert counts(text, COUNT, "url_scheme", "network_protocol_version") == {
        ("http", "1.1"): 2,
        ("https", "2"): 1,
        ("https", "1.0"): 1,
        ("https", "3"): 1,
        ("_OTHER", "1.1"): 1,
        ("http", None): 2,
    }
    # the active requests by method and scheme; semconv gives them no protocol version
    assert counts(text, ACTIVE, "http_request_method", "url_scheme") == {
        ("GET", "http"): 0,
        ("GET", "https"): 0,
        ("GET", "_OTHER"): 0,
    }
    assert counts(text, ACTIVE, "network_protocol_version") == {(None,): 0}


async def test_the_known_methods_replace_the_default_list(make_handle: MakeHandle) -> None:
    app = make_app()
    handle = make_handle(app, http_known_methods="GET,PURGE", **ONLY_HTTP)
    statuses = [
        await call(app, method) for method in ("GET", "GET", "PURGE", "POST", "get", "QUERY")
    ]
    assert statuses == [200, 200, 405, 405, 405, 405]
    text = handle.render().decode()
    # case-sensitive ("get" is not GET), and a default method not listed (POST) is _OTHER
    assert counts(text, COUNT, "http_request_method", "http_response_status_code") == {
        ("GET", "200"): 2,
        ("PURGE", "405"): 1,
        ("_OTHER", "405"): 3,
    }
    assert counts(text, ACTIVE, "http_request_method") == {
        ("GET",): 0,
        ("PURGE",): 0,
        ("_OTHER",): 0,
    }


def test_known_methods_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    default = (
        "CONNECT",
        "DELETE",
        "GET",
        "HEAD",
        "OPTIONS",
        "PATCH",
        "POST",
        "PUT",
        "QUERY",
        "TRACE",
    )
    assert load_settings().http_known_methods == default
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", " GET, PURGE,GET ")
    assert load_settings().http_known_methods == ("GET", "PURGE")
    monkeypatch.setenv("OTEL_KIT_HTTP_KNOWN_METHODS", "PROPFIND")  # otel-kit's name wins
    assert load_settings().http_known_methods == ("PROPFIND",)
    assert load_settings({"http_known_methods": {"PUT", "GET"}}).http_known_methods == (
        "GET",
        "PUT",
    )
    assert load_settings({"http_known_methods": []}).http_known_methods == ()  # all _OTHER
    monkeypatch.delenv("OTEL_KIT_HTTP_KNOWN_METHODS")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,MY METHOD")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert str(error.value) == (
        "invalid setting http_known_methods / OTEL_KIT_HTTP_KNOWN_METHODS / "
        "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS = 'GET,MY METHOD': expected comma-separated "
        "HTTP method names (case-sensitive tokens, e.g. GET,POST,PURGE), which replace the "
        "default list"
    )


async def test_active_requests_have_their_own_switch(make_handle: MakeHandle) -> None:
    app = make_app()
    handle = make_handle(app, http_active_requests=False, **ONLY_HTTP)
    assert await call(app) == 200
    assert await call(app, path="/missing") == 404
    text = handle.render().decode()
    assert ACTIVE not in text  # no family at all, not an empty one
    assert counts(text, COUNT, "http_route") == {("/items/{item_id}",): 1, ("/missing",): 1}
    monkeypatch_free = load_settings({"http_active_requests": "False"})
    assert monkeypatch_free.http_active_requests is False
    with pytest.raises(ConfigError, match="http_active_requests / OTEL_KIT_HTTP_ACTIVE_REQUESTS"):
        load_settings({"http_active_requests": "off"})
