"""The integration tests' servers, shared by the session: request them by name.

Starting and stopping them (by PID) is in redis_server.py and postgres.py; the helpers for the
tests' own processes and servers are in processes.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.postgres import running_postgres
from tests.integration.redis_server import running_redis_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a redis-server started for this session (stopped by PID at the end)."""
    with running_redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield port


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """`postgresql://postgres@127.0.0.1:<port>/otel_kit`, a fresh database on a PostgreSQL
    server started for this session (stopped by PID at the end)."""
    with running_postgres() as dsn:
        yield dsn
