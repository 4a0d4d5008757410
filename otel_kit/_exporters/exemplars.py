"""OTel exemplars as the OpenMetrics exposition writes them (prometheus_client's `Exemplar`).

A point's exemplars (otel-kit's histograms: the newest per bucket; the SDK's reservoirs: one
per bucket or per counter) go on the `_bucket` sample of their value's bucket, or on a
counter's sample, with `trace_id` and `span_id` labels (hex, as the OTel spec and Prometheus'
OTLP receiver write them), then the exemplar's filtered attributes while all its labels stay
within OpenMetrics' 128 characters.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import Exemplar as OTelExemplar
from prometheus_client.core import Exemplar

from otel_kit.catalogue import TRANSLATION_STRATEGIES, prometheus_label

__all__ = ["by_bucket", "newest"]

LabelValue = Callable[[Any], str]  # an attribute value as label text
# OpenMetrics: an exemplar's label names and values together, in UTF-8 characters.
_LABELS_MAX = 128
_IDS_SIZE = len("trace_id") + 32 + len("span_id") + 16


def newest(exemplars: Sequence[OTelExemplar], label_value: LabelValue) -> Exemplar:
    """The newest of `exemplars` (a counter's sample takes one)."""
    return _exemplar(max(exemplars, key=lambda e: e.time_unix_nano), label_value)


def by_bucket(
    exemplars: Sequence[OTelExemplar], bounds: tuple[float, ...], label_value: LabelValue
) -> dict[int, Exemplar]:
    """The newest exemplar of each bucket, by bucket index (upper bounds inclusive, as the
    buckets count)."""
    kept: dict[int, OTelExemplar] = {}
    for exemplar in exemplars:
        index = bisect_left(bounds, exemplar.value)
        old = kept.get(index)
        if old is None or exemplar.time_unix_nano >= old.time_unix_nano:
            kept[index] = exemplar
    return {index: _exemplar(exemplar, label_value) for index, exemplar in kept.items()}


def _exemplar(exemplar: OTelExemplar, label_value: LabelValue) -> Exemplar:
    """Trace and span ids first, then the filtered attributes (sorted) that fit."""
    labels: dict[str, str] = {}
    size = 0
    if exemplar.trace_id and exemplar.span_id:
        labels = {"trace_id": f"{exemplar.trace_id:032x}", "span_id": f"{exemplar.span_id:016x}"}
        size = _IDS_SIZE
    for key, value in sorted((exemplar.filtered_attributes or {}).items()):
        label = prometheus_label(key, TRANSLATION_STRATEGIES[0])
        text = label_value(value)
        if not label or label in labels or size + len(label) + len(text) > _LABELS_MAX:
            continue
        labels[label] = text
        size += len(label) + len(text)
    return Exemplar(labels, exemplar.value, exemplar.time_unix_nano / 1e9)
