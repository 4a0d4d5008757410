"""Exemplars of the client-side durations (issue 16): a SQLAlchemy statement (SQLite), a Redis
command (the session's redis-server) and an outbound httpx call (a loopback HTTP server), each
made inside a sampled span, leave exactly one exemplar on their duration histogram: that
span's trace and span ids; the same operations without a span leave none."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.contrib import recorded_spans
from tests.handles import MakeHandle
from tests.integration.http_peer import peer_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with peer_server() as url:
        yield url


def exemplar_ids(text: str, name: str, **labels: str) -> list[tuple[str, str]]:
    """(trace_id, span_id) of every exemplar on the buckets of `name` with `labels`."""
    return [
        (sample.exemplar.labels["trace_id"], sample.exemplar.labels["span_id"])
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for sample in family.samples
        if sample.name == name + "_bucket"
        and labels.items() <= sample.labels.items()
        and sample.exemplar is not None
    ]


def ids(span: Span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def traced(provider: TracerProvider, operation: Callable[[], object]) -> tuple[str, str]:
    """Run `operation` inside a sampled span, then without one (which must not replace the
    bucket's exemplar, the newest); that span's ids."""
    with provider.get_tracer("test").start_as_current_span("work") as span:
        operation()
    operation()
    return ids(span)


DB = "db_client_operation_duration_seconds"
OUTBOUND = "http_client_request_duration_seconds"


def test_db_redis_and_outbound_durations_carry_the_spans_exemplar(
    make_handle: MakeHandle, redis_server: int, base: str, tmp_path: Path
) -> None:
    handle = make_handle(db_duration_buckets="10", duration_buckets="10")  # one bucket each
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with recorded_spans() as (provider, _):
        with engine.connect() as connection:
            sql = traced(provider, lambda: connection.execute(sa.text("SELECT 1")).all())
        with redis.Redis(port=redis_server) as client:
            command = traced(provider, lambda: client.ping())
        with httpx.Client() as http:
            call = traced(provider, lambda: http.get(base + "/").raise_for_status())
    text = handle.render(openmetrics=True).decode()
    assert exemplar_ids(text, DB, db_system_name="sqlite", db_operation_name="SELECT") == [sql]
    assert exemplar_ids(text, DB, db_system_name="redis", db_operation_name="PING") == [command]
    assert exemplar_ids(text, OUTBOUND, http_request_method="GET") == [call]
    engine.dispose()
