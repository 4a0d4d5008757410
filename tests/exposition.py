"""Reading a Prometheus exposition in the tests: its samples, one summed value, label sets.

Every sample must be unique (name and label set): a duplicate fails the test that read it. The
meter's `otel_scope_*` labels (on by default) are left out unless `scope=True`: tests of what
a metric records compare the labels of its attributes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


def samples(text: str, *, scope: bool = False) -> dict[tuple[str, Labels], float]:
    """Exposition text -> {(sample name, labels): value}."""
    out: dict[tuple[str, Labels], float] = {}
    seen: set[tuple[str, Labels]] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels.items()
            key = (sample.name, frozenset(labels))
            assert key not in seen, f"a duplicate series: {sample.name}{sample.labels}"
            seen.add(key)
            if not scope:
                key = (sample.name, frozenset((k, v) for k, v in labels if k[:11] != "otel_scope_"))
                assert key not in out, f"{sample.name}{sample.labels} from several meters"
            out[key] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples(text, scope=True).items() if n == name and wanted <= ls)


def series(text: str, name: str, *, scope: bool = False) -> list[dict[str, str]]:
    """The label sets of the samples called `name`."""
    return [dict(ls) for (n, ls) in samples(text, scope=scope) if n == name]
