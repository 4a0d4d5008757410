"""Which Redis clients count as caches, under which name, and which server and database each
command went to (issue 19, item 5: a job queue's status GETs counted as cache misses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from otel_kit import ConfigError
from otel_kit.cache import redis_cache
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.integration.redis_server import running_redis_server

pytestmark = pytest.mark.integration
COUNT = "db_client_operation_duration_seconds_count"
LOOKUPS = "cache_requests_total"


@pytest.fixture
def port(redis_server: int) -> Iterator[int]:
    """The session's redis-server, emptied before each test."""
    with redis.Redis(port=redis_server) as client:
        client.flushall()
    yield redis_server


def lookups(text: str) -> dict[tuple[str, str], float]:
    """(cache_name, cache_result) -> count, for every cache_requests_total series."""
    return {
        (labels["cache_name"], labels["cache_result"]): value(text, LOOKUPS, **labels)
        for labels in series(text, LOOKUPS)
    }


async def test_a_named_cache_counts_and_an_excluded_queue_does_not(
    make_handle: MakeHandle, port: int
) -> None:
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    users = redis_cache(redis.Redis(host="127.0.0.1", port=port, db=1), "users")
    queue = redis_cache(
        redis.asyncio.Redis(host="127.0.0.1", port=port, db=2), None
    )  # arq: polls job status
    assert users.set("user:1", "ada") is True
    assert [users.get("user:1") for _ in range(3)] == [b"ada"] * 3
    assert users.get("user:2") is None
    assert users.mget("user:1", "user:3") == [b"ada", None]
    with users.pipeline() as pipe:  # a pipeline shares its client's pool, so its name
        assert pipe.get("user:1").get("user:4").execute() == [b"ada", None]
    for _ in range(5):
        assert await queue.get("arq:result:job") is None
    assert await queue.mget("arq:job:a", "arq:job:b") == [None, None]
    with redis.Redis(connection_pool=users.connection_pool) as same_pool:
        assert same_pool.get("user:1") == b"ada"  # another client on the same pool
    users.close()
    await queue.aclose()

    text = handle.render().decode()
    # GET 3+1 (same pool), MGET 1, PIPELINE 1 / GET 1, MGET 1, PIPELINE 1; the queue: none.
    assert lookups(text) == {("users", "hit"): 6, ("users", "miss"): 3}
    address = {"server_address": "127.0.0.1", "server_port": str(port)}
    assert value(text, COUNT, db_operation_name="GET", db_namespace="1", **address) == 5
    assert value(text, COUNT, db_operation_name="GET", db_namespace="2", **address) == 5
    assert value(text, COUNT, db_operation_name="MGET", db_namespace="2", **address) == 1
    assert {labels["db_namespace"] for labels in series(text, COUNT)} == {"1", "2"}
    assert all(labels.keys() >= address.keys() for labels in series(text, COUNT))


def test_named_mode_counts_only_the_named_clients(make_handle: MakeHandle, port: int) -> None:
    plain = redis.Redis(port=port)  # unnamed, created before setup: not a cache under `named`
    named = redis_cache(redis.Redis(port=port, db=1), "sessions")
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0, redis_cache="named")
    assert plain.get("k") is None
    assert plain.hget("h", "f") is None
    assert named.get("k") is None
    named.set("k", "v")
    assert named.get("k") == b"v"
    plain.close()
    named.close()
    text = handle.render().decode()
    assert lookups(text) == {("sessions", "hit"): 1, ("sessions", "miss"): 1}
    assert value(text, COUNT, db_operation_name="GET", db_namespace="0") == 1
    assert value(text, COUNT, db_operation_name="HGET", db_namespace="0") == 1


async def test_none_mode_counts_no_redis_lookup_at_all(
    make_handle: MakeHandle, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_KIT_REDIS_CACHE", " None ")
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    named = redis_cache(redis.asyncio.Redis(port=port, db=1), "users")
    plain = redis.Redis(port=port)
    assert await named.get("k") is None
    assert plain.mget("a", "b") == [None, None]
    with plain.pipeline() as pipe:
        assert pipe.get("a").execute() == [None]
    await named.aclose()
    plain.close()
    text = handle.render().decode()
    assert LOOKUPS not in text
    assert value(text, COUNT, db_operation_name="GET", db_namespace="1") == 1
    assert value(text, COUNT, db_operation_name="MGET", db_namespace="0") == 1
    assert value(text, COUNT, db_operation_name="MULTI", db_namespace="0") == 1


def test_two_servers_with_the_same_db_index_stay_apart(
    make_handle: MakeHandle, port: int, tmp_path: Path
) -> None:
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    with (
        running_redis_server(tmp_path) as other_port,
        redis.Redis(host="127.0.0.1", port=port) as first,
        redis.Redis(host="127.0.0.1", port=other_port) as second,
    ):
        assert first.get("k") is None
        assert second.get("k") is None
        assert second.get("k") is None
    text = handle.render().decode()
    ports = {labels["server_port"]: labels for labels in series(text, COUNT)}
    assert set(ports) == {str(port), str(other_port)}
    assert value(text, COUNT, db_operation_name="GET", server_port=str(port)) == 1
    assert value(text, COUNT, db_operation_name="GET", server_port=str(other_port)) == 2
    assert {labels["server_address"] for labels in ports.values()} == {"127.0.0.1"}


def test_a_unix_socket_is_the_server_address(make_handle: MakeHandle, tmp_path: Path) -> None:
    # No server needed: the path is known before connecting, and the failure is recorded.
    socket = tmp_path / "no-redis.sock"
    handle = make_handle(prometheus_host="127.0.0.1", prometheus_port=0)
    with (
        redis.Redis(unix_socket_path=str(socket), retry_on_error=[]) as r,
        pytest.raises(redis.ConnectionError),
    ):
        r.get("k")
    text = handle.render().decode()
    assert [labels for labels in series(text, COUNT)] == [
        {
            "db_system_name": "redis",
            "db_operation_name": "GET",
            "db_namespace": "0",
            "error_type": "redis.exceptions.ConnectionError",
            "server_address": str(socket),
        }
    ]


@pytest.mark.parametrize("text", ["some", "true", "all,none", ""])
def test_a_bad_mode_names_the_setting_and_the_allowed_values(
    make_handle: MakeHandle, text: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_handle(redis_cache=text)
    message = str(raised.value)
    assert message.startswith(f"invalid setting redis_cache / OTEL_KIT_REDIS_CACHE = {text!r}:")
    assert "allowed: all" in message and "named" in message and "none" in message


def test_redis_cache_rejects_what_it_cannot_name() -> None:
    with pytest.raises(ValueError, match=r"a non-empty string .* or None"):
        redis_cache(redis.Redis(), "")
    with pytest.raises(ValueError, match=r"a non-empty string .* or None"):
        redis_cache(redis.Redis(), 7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"a redis-py client .* got str"):
        redis_cache("redis://localhost", "users")
