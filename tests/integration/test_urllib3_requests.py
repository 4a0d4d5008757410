"""Outbound urllib3 and requests calls against real servers on loopback: statuses, redirects,
Retry attempts, refused connections, a server that stalls, and requests counted once."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
import requests
import urllib3
from opentelemetry.instrumentation.utils import suppress_instrumentation
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util import Retry

from otel_kit._instrumentation._context import error_type
from otel_kit._instruments import FastHistogram
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.integration.http_peer import (
    MARK,
    Handler,
    handle_for,
    peer_server,
    port_of,
    render,
    stalled_port,
)

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


def fetch(url: str) -> urllib3.BaseHTTPResponse:
    """GET through a pool of its own, closed at once (the module's shared pool would keep
    connections open, and the server's shutdown waits for them)."""
    with urllib3.PoolManager() as http:
        return http.request("GET", url)


def test_urllib3_pool_manager(make_handle: MakeHandle, base: str) -> None:
    port = port_of(base)
    early = urllib3.PoolManager()  # created before setup: measured too
    handle = handle_for(make_handle, peer_services=f"127.0.0.1:{port}=local-api")
    with early, urllib3.PoolManager() as late:
        for i in range(3):
            assert early.request("GET", f"{base}/status/200/{MARK}?id={i}&{MARK}=1").data == b"ok"
        for _ in range(2):
            assert late.request("GET", f"{base}/status/404?{MARK}").status == 404
        assert late.request("GET", f"{base}/status/500").status == 500
        assert late.request("POST", f"{base}/status/201").status == 201
        assert late.request("PURGE", f"{base}/status/200").status == 200
        # PoolManager follows the redirect: two attempts, a 302 and a 200
        assert late.request("GET", f"{base}/redirect/{MARK}").status == 200
    text = render(handle)

    def count(**labels: str) -> float:
        return value(text, COUNT, server_address="127.0.0.1", server_port=port, **labels)

    assert count(http_request_method="GET", http_response_status_code="200") == 4
    assert count(http_request_method="GET", http_response_status_code="302") == 1
    assert count(http_response_status_code="404", error_type="404") == 2
    assert count(http_response_status_code="500", error_type="500") == 1
    assert count(http_request_method="POST", http_response_status_code="201") == 1
    assert count(http_request_method="_OTHER", http_response_status_code="200") == 1
    assert count(service_peer_name="local-api", network_protocol_version="1.1") == 10
    assert value(text, COUNT) == 10
    assert len(series(text, COUNT)) == 6
    assert value(text, BUCKET, le="+Inf") == 10


def test_requests_are_counted_once(make_handle: MakeHandle, base: str) -> None:
    port = port_of(base)
    early = requests.Session()  # created before setup: measured too
    handle = handle_for(make_handle)
    with early:
        for i in range(2):
            assert early.get(f"{base}/status/200/{MARK}", params={MARK: i}).text == "ok"
        assert early.post(f"{base}/status/201", data={"k": MARK}).status_code == 201
    assert requests.get(f"{base}/status/404?{MARK}=1", timeout=5).status_code == 404
    # requests follows the redirect itself: each hop is one urllib3 attempt
    response = requests.get(f"{base}/redirect?{MARK}=1", timeout=5)
    assert [r.status_code for r in response.history] == [302] and response.status_code == 200
    text = render(handle)

    def count(**labels: str) -> float:
        return value(text, COUNT, server_address="127.0.0.1", server_port=port, **labels)

    assert count(http_request_method="GET", http_response_status_code="200") == 3
    assert count(http_request_method="GET", http_response_status_code="302") == 1
    assert count(http_request_method="POST", http_response_status_code="201") == 1
    assert count(http_request_method="GET", http_response_status_code="404", error_type="404") == 1
    assert count(network_protocol_version="1.1") == 6
    assert value(text, COUNT) == 6  # not 12: once, not in requests and again in urllib3
    assert len(series(text, COUNT)) == 4


def test_retry_counts_each_attempt(make_handle: MakeHandle, base: str) -> None:
    port, refused = port_of(base), free_port()
    handle = handle_for(make_handle)
    status_retry = Retry(total=2, status_forcelist=[503], raise_on_status=False)
    with urllib3.PoolManager(retries=status_retry) as http:
        assert http.request("GET", f"{base}/status/503?{MARK}").status == 503  # 3 attempts
    with pytest.raises(MaxRetryError) as info:
        urllib3.PoolManager(retries=Retry(connect=3)).request("GET", f"http://127.0.0.1:{refused}/")
    assert isinstance(info.value.reason, NewConnectionError)
    connect_error = error_type(info.value.reason)
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=Retry(total=1, status_forcelist=[503])))
        with pytest.raises(requests.exceptions.RetryError):
            session.get(f"{base}/status/503/{MARK}")  # 2 attempts, then requests raises
    text = render(handle)

    server = {"server_address": "127.0.0.1", "server_port": port}
    assert value(text, COUNT, **server, http_response_status_code="503", error_type="503") == 5
    refusals = {"server_port": str(refused), "error_type": connect_error}
    assert value(text, COUNT, **refusals) == 4  # the first try and 3 retries
    assert value(text, COUNT) == 9
    assert len(series(text, COUNT)) == 2


def test_connection_refused_and_timeout(make_handle: MakeHandle, stalled: str) -> None:
    refused = free_port()
    handle = handle_for(make_handle, peer_services="127.0.0.1=loopback")
    timeouts = urllib3.Timeout(connect=5, read=0.1)
    with urllib3.PoolManager(retries=False, timeout=timeouts) as http:
        with pytest.raises(NewConnectionError) as refusal:
            http.request("GET", f"http://127.0.0.1:{refused}/{MARK}?{MARK}=1")
        with pytest.raises(ReadTimeoutError) as read_timeout:
            http.request("GET", f"{stalled}/{MARK}")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{refused}/{MARK}", timeout=5)
    for _ in range(2):
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(f"{stalled}/?{MARK}=1", timeout=(5, 0.1))
    text = render(handle)

    # error.type is the exception of the attempt (urllib3's), not requests' wrapper
    connect = {"server_port": str(refused), "error_type": error_type(refusal.value)}
    assert (
        value(text, COUNT, http_request_method="GET", service_peer_name="loopback", **connect) == 2
    )
    timeout = {"server_port": port_of(stalled), "error_type": error_type(read_timeout.value)}
    assert value(text, COUNT, **timeout) == 3
    assert value(text, BUCKET, le="0.075", **timeout) == 0  # waited for the 0.1 s timeout
    assert value(text, BUCKET, le="10.0", **timeout) == 3
    assert value(text, COUNT) == 5
    assert len(series(text, COUNT)) == 2
    no_response = ("http_response_status_code", "network_protocol_version")
    assert all(k not in labels for labels in series(text, COUNT) for k in no_response)


def test_duration_covers_a_preloaded_body_only(make_handle: MakeHandle, base: str) -> None:
    handle = handle_for(make_handle)
    start = time.perf_counter()
    assert fetch(f"{base}/slow-body").data == b"ok"  # preloads the body
    assert requests.get(f"{base}/slow-body", timeout=5).text == "ok"  # streams it
    assert time.perf_counter() - start >= 2.0
    text = render(handle)

    assert value(text, BUCKET, le="0.75") == 1  # requests: the headers came at once
    assert value(text, BUCKET, le="+Inf") == 2  # urllib3: it waited for the body
    assert value(text, "http_client_request_duration_seconds_sum") >= 1.0


def test_default_port_from_scheme(make_handle: MakeHandle) -> None:
    handle = handle_for(make_handle)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", retries=False, timeout=2)  # no port given
    with pool, contextlib.suppress(urllib3.exceptions.HTTPError):
        pool.request("GET", "/")  # nothing listens on 80 (usually): measured either way
    text = handle.render().decode()
    assert value(text, COUNT, server_address="127.0.0.1", server_port="80") == 1
    assert value(text, COUNT) == 1


def test_metrics_failure_never_reaches_the_caller(
    make_handle: MakeHandle,
    base: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: FastHistogram, amount: float, key: tuple[object, ...]) -> None:
        raise RuntimeError("metrics bug")

    handle_for(make_handle)
    monkeypatch.setattr(FastHistogram, "record", broken)
    assert requests.get(f"{base}/status/500", timeout=5).status_code == 500
    assert fetch(f"{base}/status/200").data == b"ok"
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{free_port()}/", timeout=5)
    assert "recording urllib3 metrics failed" in caplog.text


def test_through_a_forwarding_proxy_the_target_is_the_server(
    make_handle: MakeHandle, base: str
) -> None:
    # The peer server answers absolute-form requests too: it stands in for the proxy. No name
    # is ever resolved; the pool is the proxy's, the labels are the target's.
    handle = handle_for(make_handle)
    with urllib3.ProxyManager(base) as http:
        assert http.request("GET", f"http://payments.example:8080/{MARK}?{MARK}=1").status == 200
    proxies = {"http": base}
    assert requests.get(f"http://payments.example/{MARK}", proxies=proxies, timeout=5).ok
    text = render(handle)
    assert value(text, COUNT, server_address="payments.example", server_port="8080") == 1
    assert value(text, COUNT, server_address="payments.example", server_port="80") == 1
    assert value(text, COUNT) == 2


def test_known_methods_setting(make_handle: MakeHandle, base: str) -> None:
    handle = handle_for(make_handle, http_known_methods="GET,PURGE")
    with requests.Session() as session:
        for method in ("PURGE", "POST", "GET"):
            assert session.request(method, f"{base}/status/200").status_code == 200
    text = render(handle)
    for method in ("PURGE", "_OTHER", "GET"):  # POST is not in the list given
        assert value(text, COUNT, http_request_method=method) == 1, method
    assert value(text, COUNT) == 3


def test_own_push_and_suppressed_calls_are_not_counted(make_handle: MakeHandle, base: str) -> None:
    # otel-kit's OTLP/HTTP push sends through requests: its exports are no call of the app's
    handle = handle_for(
        make_handle,
        metrics_exporter="prometheus,otlp",
        otlp_endpoint=base,
        export_interval_ms=60_000,
    )
    pushed = Handler.received["/v1/metrics"]
    assert requests.get(f"{base}/status/200", timeout=5).status_code == 200
    with suppress_instrumentation():
        assert requests.get(f"{base}/status/201", timeout=5).status_code == 201
        assert fetch(f"{base}/status/202").status == 202
    for _ in range(2):
        assert handle.meter_provider.force_flush()  # a push, from this thread
    assert Handler.received["/v1/metrics"] == pushed + 2
    text = render(handle)
    assert value(text, COUNT, http_request_method="GET", http_response_status_code="200") == 1
    assert value(text, COUNT) == 1


def test_disabled_urllib3_records_nothing(make_handle: MakeHandle, base: str) -> None:
    original = urllib3.HTTPConnectionPool._make_request
    handle = handle_for(make_handle, disabled_instrumentations="urllib3")
    assert urllib3.HTTPConnectionPool._make_request is original
    assert requests.get(f"{base}/status/200", timeout=5).status_code == 200
    assert fetch(f"{base}/status/200").status == 200
    assert series(handle.render().decode(), COUNT) == []


def test_disabled_requests_leaves_direct_urllib3_calls(make_handle: MakeHandle, base: str) -> None:
    handle = handle_for(make_handle, disabled_instrumentations="requests")
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=Retry(total=1, status_forcelist=[503])))
        assert session.get(f"{base}/status/200").status_code == 200
        with pytest.raises(requests.exceptions.RetryError):
            session.get(f"{base}/status/503")
    assert fetch(f"{base}/status/201").status == 201
    text = handle.render().decode()
    assert value(text, COUNT, http_response_status_code="201") == 1
    assert value(text, COUNT) == 1


def test_undo_restores_the_pool(make_handle: MakeHandle, base: str) -> None:
    original = urllib3.HTTPConnectionPool._make_request
    handle = handle_for(make_handle)
    assert urllib3.HTTPConnectionPool._make_request is not original
    handle.shutdown()
    assert urllib3.HTTPConnectionPool._make_request is original

    handle = handle_for(make_handle)  # counts from zero
    assert requests.get(f"{base}/status/200", timeout=5).status_code == 200
    assert value(handle.render().decode(), COUNT) == 1
