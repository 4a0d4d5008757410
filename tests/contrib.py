"""For the tests that enable contrib's instrumentors beside otel-kit (test_double_counting):
their semantic-conventions mode, a tracer provider that keeps the spans, and reading which
meter (`otel_scope_name`) each series comes from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

OTEL_KIT = "otel_kit"  # the meter of otel-kit's own HTTP and DB series


def _reread_opt_in() -> None:
    # contrib reads OTEL_SEMCONV_STABILITY_OPT_IN once per process; its own tests reset it so
    _OpenTelemetrySemanticConventionStability._initialized = False
    _OpenTelemetrySemanticConventionStability._initialize()  # type: ignore[no-untyped-call]


@contextmanager
def old_and_stable_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Contrib emits its old names and the stable ones at once (`http/dup`, `database/dup`),
    so a test sees both kinds dropped."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup,database/dup")
    _reread_opt_in()
    try:
        yield
    finally:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN")
        _reread_opt_in()


@contextmanager
def recorded_spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    try:
        yield provider, spans
    finally:
        provider.shutdown()


def read(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels including the meter's otel_scope_* ones, value) of each sample."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def scopes(text: str) -> dict[str, set[str]]:
    """{sample name: the meters (otel_scope_name) it has series from}."""
    out: dict[str, set[str]] = {}
    for name, labels, _ in read(text):
        out.setdefault(name, set()).add(labels.get("otel_scope_name", ""))
    return out


def value(text: str, name: str, **wanted: str) -> float:
    """The sum of the samples called `name` that have these labels, from every meter."""
    return sum(v for n, labels, v in read(text) if n == name and wanted.items() <= labels.items())


def by(text: str, name: str, *keys: str) -> dict[tuple[str | None, ...], float]:
    """{(meter, the values of `keys`): summed value} of the samples called `name`."""
    out: dict[tuple[str | None, ...], float] = {}
    for n, labels, v in read(text):
        if n == name:
            key = (labels.get("otel_scope_name"), *(labels.get(k) for k in keys))
            out[key] = out.get(key, 0) + v
    return out
