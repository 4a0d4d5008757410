"""The positional keys `otel_kit._instrumentation._db` builds name their attributes by the
catalogue's order (the fast instruments zip the two): each value lands under its own name."""

from __future__ import annotations

from otel_kit import catalogue
from otel_kit._instrumentation._db import (
    QuerySummaries,
    Target,
    pool_attributes,
    pool_key,
    pool_state_key,
)

OPERATION = catalogue.DB_CLIENT_OPERATION_DURATION.attributes


def test_operation_keys_follow_the_catalogue() -> None:
    target = Target("postgresql", "shop", "db.internal", 5432, QuerySummaries(10))
    assert dict(zip(OPERATION, target.key("COMMIT", "TimeoutError", "57014"), strict=True)) == {
        "db.system.name": "postgresql",
        "db.operation.name": "COMMIT",
        "db.namespace": "shop",
        "error.type": "TimeoutError",
        "server.address": "db.internal",
        "server.port": 5432,
        "db.response.status_code": "57014",
        "db.query.summary": "COMMIT",
    }
    key = target.statement_key("SELECT id FROM users WHERE id = 1", "UniqueViolation", "23505")
    assert dict(zip(OPERATION, key, strict=True)) == {
        "db.system.name": "postgresql",
        "db.operation.name": "SELECT",
        "db.namespace": "shop",
        "error.type": "UniqueViolation",
        "server.address": "db.internal",
        "server.port": 5432,
        "db.response.status_code": "23505",
        "db.query.summary": "SELECT users",
    }


def test_pool_keys_follow_the_catalogue() -> None:
    count = catalogue.DB_CLIENT_CONNECTION_COUNT.attributes
    assert dict(zip(count, pool_state_key("main", "idle"), strict=True)) == (
        pool_attributes("main", "idle")
    )
    assert pool_attributes("main", "idle") == {
        "db.client.connection.pool.name": "main",
        "db.client.connection.state": "idle",
    }
    for spec in (
        catalogue.DB_CLIENT_CONNECTION_MAX,
        catalogue.DB_CLIENT_CONNECTION_PENDING_REQUESTS,
        catalogue.DB_CLIENT_CONNECTION_TIMEOUTS,
        catalogue.DB_CLIENT_CONNECTION_WAIT_TIME,
    ):
        assert dict(zip(spec.attributes, pool_key("main"), strict=True)) == (
            pool_attributes("main")
        ), spec.name
    assert pool_attributes("main") == {"db.client.connection.pool.name": "main"}
