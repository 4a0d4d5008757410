"""Semantic-conventions details of the HTTP server metrics (issue 15): `error.type` as a fully
qualified class name, in-process through the app's own /metrics."""

from __future__ import annotations

import concurrent.futures

import h11
import httpx
import pytest
import redis

from otel_kit._instrumentation._context import error_type
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.http_app import client, make_app

COUNT = "http_server_request_duration_seconds_count"


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
