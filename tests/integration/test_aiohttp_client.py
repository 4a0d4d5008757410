"""Outbound aiohttp ClientSession calls against real servers on loopback: statuses, redirects,
refused connections, a server that stalls, the total timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aiohttp
import pytest

from otel_kit._instrumentation._context import error_type
from otel_kit._instruments import FastHistogram
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.integration.http_peer import MARK, handle_for, peer_server, port_of, render, stalled_port

# free_port(): nothing listens there, so connecting is refused
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration
COUNT = "http_client_request_duration_seconds_count"
BUCKET = "http_client_request_duration_seconds_bucket"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with peer_server() as url:
        yield url


@pytest.fixture(scope="module")
def stalled() -> Iterator[str]:
    with stalled_port() as url:
        yield url


async def test_sessions(make_handle: MakeHandle, base: str) -> None:
    port = port_of(base)
    early = aiohttp.ClientSession(base_url=base)  # created before setup: measured too
    handle = handle_for(make_handle, peer_services=f"127.0.0.1:{port}=local-api")
    async with early, aiohttp.ClientSession() as late:
        for i in range(3):
            async with early.get(f"/status/200/{MARK}", params={MARK: str(i)}) as response:
                assert await response.text() == "ok"
        for _ in range(2):
            async with late.get(f"{base}/status/404?{MARK}=1") as response:
                assert response.status == 404
        async with late.delete(f"{base}/status/500") as response:
            assert response.status == 500
        async with late.post(f"{base}/status/201", data={"k": MARK}) as response:
            assert response.status == 201
        async with late.request("PURGE", f"{base}/status/200") as response:
            assert response.status == 200
        # followed inside the one call: one measurement, the final status
        async with late.get(f"{base}/redirect/{MARK}") as response:
            assert response.status == 200 and len(response.history) == 1
        async with late.get(f"{base}/redirect", allow_redirects=False) as response:
            assert response.status == 302
    text = render(handle)

    def count(**labels: str) -> float:
        return value(text, COUNT, server_address="127.0.0.1", server_port=port, **labels)

    assert count(http_request_method="GET", http_response_status_code="200") == 4
    assert count(http_request_method="GET", http_response_status_code="302") == 1
    assert count(http_request_method="GET", http_response_status_code="404", error_type="404") == 2
    assert count(http_request_method="DELETE", http_response_status_code="500") == 1
    assert count(http_request_method="POST", http_response_status_code="201") == 1
    assert count(http_request_method="_OTHER", http_response_status_code="200") == 1
    assert count(service_peer_name="local-api", network_protocol_version="1.1") == 10
    assert count(error_type="500") == 1
    assert value(text, COUNT) == 10
    assert len(series(text, COUNT)) == 6
    assert value(text, BUCKET, le="+Inf") == 10


async def test_refused_and_timeouts(make_handle: MakeHandle, stalled: str) -> None:
    refused = free_port()
    handle = handle_for(make_handle, peer_services="127.0.0.1=loopback")
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            with pytest.raises(aiohttp.ClientConnectorError) as refusal:
                await session.get(f"http://127.0.0.1:{refused}/{MARK}?{MARK}=1")
        with pytest.raises(aiohttp.ServerTimeoutError) as read_timeout:
            await session.get(f"{stalled}/{MARK}", timeout=aiohttp.ClientTimeout(sock_read=0.1))
        with pytest.raises(asyncio.TimeoutError) as total_timeout:  # TimeoutError from 3.11
            await session.get(f"{stalled}/?{MARK}=1", timeout=aiohttp.ClientTimeout(total=0.1))
    text = render(handle)

    connect = {"server_port": str(refused), "error_type": error_type(refusal.value)}
    assert (
        value(text, COUNT, http_request_method="GET", service_peer_name="loopback", **connect) == 2
    )
    stall = port_of(stalled)
    for exc in (read_timeout.value, total_timeout.value):
        timeout = {"server_port": stall, "error_type": error_type(exc)}
        assert value(text, COUNT, **timeout) == 1, timeout
        assert value(text, BUCKET, le="0.075", **timeout) == 0  # waited for the 0.1 s timeout
    assert error_type(read_timeout.value) != error_type(total_timeout.value)
    assert value(text, COUNT) == 4
    assert len(series(text, COUNT)) == 3
    no_response = ("http_response_status_code", "network_protocol_version")
    assert all(k not in labels for labels in series(text, COUNT) for k in no_response)


async def test_default_port_from_scheme(make_handle: MakeHandle) -> None:
    handle = handle_for(make_handle)
    async with aiohttp.ClientSession() as session:
        with contextlib.suppress(aiohttp.ClientError):  # nothing listens on 80 (usually)
            await session.get("http://127.0.0.1/", timeout=aiohttp.ClientTimeout(total=2))
    text = handle.render().decode()
    assert value(text, COUNT, server_address="127.0.0.1", server_port="80") == 1
    assert value(text, COUNT) == 1


async def test_metrics_failure_never_reaches_the_caller(
    make_handle: MakeHandle,
    base: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: FastHistogram, amount: float, key: tuple[object, ...]) -> None:
        raise RuntimeError("metrics bug")

    handle_for(make_handle)
    monkeypatch.setattr(FastHistogram, "record", broken)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/status/500") as response:
            assert response.status == 500
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"http://127.0.0.1:{free_port()}/")
    assert "recording aiohttp metrics failed" in caplog.text


async def test_disabled_records_nothing(make_handle: MakeHandle, base: str) -> None:
    original = aiohttp.ClientSession._request
    handle = handle_for(make_handle, disabled_instrumentations="aiohttp")
    assert aiohttp.ClientSession._request is original
    async with aiohttp.ClientSession() as session, session.get(f"{base}/status/200") as response:
        assert response.status == 200
    assert series(handle.render().decode(), COUNT) == []


async def test_undo_restores_the_session(make_handle: MakeHandle, base: str) -> None:
    original = aiohttp.ClientSession._request
    handle = handle_for(make_handle)
    assert aiohttp.ClientSession._request is not original
    handle.shutdown()
    assert aiohttp.ClientSession._request is original

    handle = handle_for(make_handle)  # counts from zero
    async with aiohttp.ClientSession() as session, session.get(f"{base}/status/200") as response:
        assert response.status == 200
    assert value(handle.render().decode(), COUNT) == 1
