"""What `otel-kit top` computes between two scrapes: increases, rates and percentiles.

Plain functions over flattened samples, so they are tested with known buckets and known
quantiles; percentiles interpolate inside a bucket exactly as PromQL's `histogram_quantile`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from otel_kit.cli._exposition import Samples

__all__ = ["Window", "counter_windows", "histogram_quantile", "histogram_windows", "increase"]

Labels = Mapping[str, str]


def increase(before: float | None, after: float) -> float:
    """How much a counter grew; a drop means the process restarted and counted from zero."""
    if before is None or after < before:
        return after
    return after - before


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative `(upper bound, count)` buckets, like PromQL.

    Linear interpolation inside the bucket the rank falls in; the first bucket starts at 0;
    a rank in the +Inf bucket gives the largest finite bound. None without observations or
    without a +Inf bucket.
    """
    ordered = sorted(buckets)
    if len(ordered) < 2 or ordered[-1][0] != math.inf or not 0 <= q <= 1:
        return None
    # Like PromQL, a count below its predecessor (a torn scrape) is lifted to it.
    cumulative: list[tuple[float, float]] = []
    for bound, count in ordered:
        cumulative.append((bound, max(count, cumulative[-1][1]) if cumulative else count))
    total = cumulative[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(cumulative) if count >= rank)
    if index == len(cumulative) - 1:
        return cumulative[-2][0]
    upper, count = cumulative[index]
    if index == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = cumulative[index - 1]
    if count == below:  # only when rank == 0
        return lower
    return lower + (upper - lower) * (rank - below) / (count - below)


@dataclass
class Window:
    """One group's activity between two scrapes (count, errors, bucket increases)."""

    count: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, list(self.buckets.items()))

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.count if self.count > 0 else None


def histogram_windows(
    before: Samples,
    after: Samples,
    name: str,
    group: Callable[[Labels], str],
    is_error: Callable[[Labels], bool] = lambda labels: False,
) -> dict[str, Window]:
    """Histogram `name`'s increases between two scrapes, summed per `group(labels)`."""
    windows: dict[str, Window] = {}
    for (sample, key), value in after.items():
        if sample == f"{name}_bucket":
            labels = dict(key)
            le = float(labels.pop("le"))
            window = windows.setdefault(group(labels), Window())
            grown = increase(before.get((sample, key)), value)
            window.buckets[le] = window.buckets.get(le, 0.0) + grown
        elif sample == f"{name}_count":
            labels = dict(key)
            window = windows.setdefault(group(labels), Window())
            grown = increase(before.get((sample, key)), value)
            window.count += grown
            if is_error(labels):
                window.errors += grown
    return windows


def counter_windows(
    before: Samples, after: Samples, name: str, group: Callable[[Labels], str | None]
) -> dict[str, float]:
    """Counter sample `name`'s increases, summed per `group(labels)` (None: left out)."""
    totals: dict[str, float] = {}
    for (sample, key), value in after.items():
        group_key = group(dict(key)) if sample == name else None
        if group_key is not None:
            grown = increase(before.get((sample, key)), value)
            totals[group_key] = totals.get(group_key, 0.0) + grown
    return totals
