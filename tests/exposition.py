"""Reading a Prometheus exposition in the tests: its samples, one summed value, label sets."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Exposition text -> {(sample name, labels): value}."""
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and wanted <= ls)


def series(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of the samples called `name`."""
    return [dict(ls) for (n, ls) in samples(text) if n == name]
