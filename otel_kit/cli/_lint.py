"""The rules of `otel-kit check`: cardinality, label values and naming, per metric family.

Every rule has a stable id and a fixed severity. Errors are what costs money, leaks data or
breaks queries (unbounded or personal label values, series over budget); warnings are the
naming and bucket conventions Prometheus tooling relies on; info is what `promtool check
metrics` flags beyond them (OpenTelemetry semantic-conventions names among it): never a failure.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric

from otel_kit.catalogue import DB_CLIENT_CONNECTION_COUNT
from otel_kit.cli._exposition import EXEMPLAR_LABELS_MAX, BadExemplar, Exposition

__all__ = ["RULES", "FamilyReport", "Finding", "Report", "lint"]

RULES: dict[str, tuple[str, str]] = {  # id -> (severity, hint)
    "label-looks-like-id": (
        "error",
        "one series per entity: drop the label or use a bounded category (tier, type)",
    ),
    "label-looks-like-path": (
        "error",
        "record the route template (/users/{user_id}), never the raw path or query string",
    ),
    "label-looks-like-email": ("error", "personal data in a label: remove it"),
    "label-looks-like-timestamp": (
        "error",
        "a new series every time: put times in a sample value (a *_timestamp_seconds gauge)",
    ),
    "high-cardinality-label": (
        "error",
        "bound the values (template, category, or drop the label), or raise "
        "--cardinality-threshold if this is expected",
    ),
    "too-many-series": ("error", "over the series budget: start with the largest families"),
    "exemplar-labels-too-long": (
        "error",
        "keep an exemplar's labels to trace_id and span_id (OpenMetrics allows 128 characters; "
        "strict parsers reject the scrape, Prometheus drops the exemplar)",
    ),
    "exemplar-not-allowed": (
        "error",
        "exemplars only on a counter's _total or a histogram's _bucket samples (OpenMetrics): "
        "strict parsers reject the scrape",
    ),
    "counter-without-total": ("warning", "name counters <name>_total (OpenMetrics requires it)"),
    "counter-named-like-gauge": (
        "warning",
        "a counter only goes up: a current value (active, in progress) is a gauge",
    ),
    "gauge-named-like-counter": (
        "warning",
        "_total, _count, _sum and _bucket belong to counters and histograms; rename the gauge",
    ),
    "unit-suffix-mismatch": (
        "warning",
        "base unit as the last word (_seconds, _bytes, _ratio); _total only on counters",
    ),
    "missing-unit": ("warning", "end the name with its unit: _seconds, _bytes, _ratio"),
    "missing-help": ("warning", "add a HELP text: dashboards and people read it"),
    "histogram-buckets": (
        "warning",
        "buckets in the base unit around your SLO, the same on every series "
        "(e.g. 0.005 ... 10 for seconds)",
    ),
    "promtool-lint": (
        "info",
        "promtool check metrics flags this (its exit status 3): keep a semantic-conventions "
        "name, rename anything else where you can",
    ),
}

# OTel semantic-conventions UpDownCounters named `*.count`: exported as gauges called `*_count`,
# the same series whether scraped directly or through a Collector. Not a warning: promtool's
# finding on them is reported as info, with the reason to keep them.
SEMCONV_COUNT_GAUGES = frozenset(
    {
        DB_CLIENT_CONNECTION_COUNT.prometheus,
        "process_thread_count",
        "process_unix_file_descriptor_count",
        "process_windows_handle_count",
        "process_open_file_descriptor_count",
        "system_process_count",
        "jvm_thread_count",
        "jvm_class_count",
        "jvm_cpu_count",
        "go_goroutine_count",
        "dotnet_thread_pool_thread_count",
        "dotnet_assembly_count",
        "dotnet_timer_count",
    }
)
_WITH_CREATED = ("counter", "histogram", "summary")
_COUNTER_SUFFIXES = ("total", "count", "sum", "bucket")
_NOT_LABELS = frozenset({"le", "quantile"})  # bucket bounds and quantiles: not cardinality
_EXAMPLE_MAX = 40
# The value rules read at most this much of a value: their cost stays bounded whatever an
# exposition holds, and an ID, path, email or time is far shorter.
VALUE_MAX = 1024
_MIN_BUCKETS, _MAX_BUCKETS = 5, 40
_MEASURES = frozenset({
    "duration", "latency", "time", "elapsed", "delay", "wait", "age", "uptime", "memory", "lag",
    "ttl",
})  # fmt: skip
_BASE_UNITS = frozenset({
    "seconds", "bytes", "ratio", "percent", "bits", "celsius", "meters", "volts", "amperes",
    "joules", "grams", "hertz",
})  # fmt: skip
_OTHER_UNITS = frozenset({
    "ms", "millis", "milliseconds", "us", "microseconds", "ns", "nanoseconds", "sec", "secs",
    "minutes", "hours", "days", "kb", "kilobytes", "mb", "megabytes", "gb", "gigabytes", "kib",
    "kibibytes", "mib", "mebibytes", "gib", "gibibytes",
})  # fmt: skip
_GAUGE_WORDS = ("current", "active", "inprogress", "in_progress", "inflight", "in_flight")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_HEX = re.compile(r"(?:0x)?[0-9a-f]{16,}", re.I)
_SHORT_HEX = re.compile(r"(?=.*\d)(?=.*[a-f])[0-9a-f]{8,}", re.I)
# Opaque tokens (base64, random ids); dashed names such as pod names are not matched.
_TOKEN = re.compile(r"(?=(?:.*\d){3})(?=(?:.*[A-Za-z]){3})[A-Za-z0-9+/=]{20,}")
# An address somewhere in a value. One local-part character before the `@` is all a search
# needs: matching the whole local part (`[\w.+-]+@`) made the search quadratic in the value's
# length (a 64 KB value took 15 s).
_EMAIL_IN = re.compile(r"(?<=[\w.+-])@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")  # fullmatch only: linear
_ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_EPOCH = re.compile(r"(\d{10})(\d{3}|\d{6}|\d{9})?(?:\.\d+)?")
# Request URLs only: a database URL (sqlite:///shop.db) names a connection, not a request.
_URL = re.compile(r"https?://[^/]*", re.I)
_ID_NAME = re.compile(r"(?:.*_)?(?:id|uid|uuid|guid)|.*[a-z](?:Id|Uid|Uuid|Guid)")
_YEAR_2000, _YEAR_2100 = 946_684_800, 4_102_444_800


@dataclass(frozen=True)
class Finding:
    rule: str
    family: str | None
    label: str | None
    example: str | None
    message: str

    @property
    def severity(self) -> str:
        return RULES[self.rule][0]

    @property
    def hint(self) -> str:
        return RULES[self.rule][1]


@dataclass(frozen=True)
class FamilyReport:
    name: str
    type: str
    help: bool
    series: int
    labels: tuple[tuple[str, int], ...]  # (label, distinct values), most values first


@dataclass
class Report:
    families: list[FamilyReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def series(self) -> int:
        return sum(family.series for family in self.families)


def lint(exposition: Exposition, cardinality_threshold: int, max_series: int | None) -> Report:
    """Every rule over every family of `exposition`."""
    report = Report()
    resource = _resource_pairs(exposition.families)
    # prometheus_client's text format puts `<name>_created` gauges beside counters and
    # histograms; their parent family carries the findings.
    companions = {f.name + "_created" for f in exposition.families if f.type in _WITH_CREATED}
    for family in exposition.families:
        name = _display_name(family, exposition)
        values = _label_values(family)
        report.families.append(
            FamilyReport(
                name=name,
                type=family.type,
                help=bool(family.documentation.strip()),
                series=len(family.samples),
                labels=tuple(
                    sorted(((k, len(v)) for k, v in values.items()), key=lambda kv: -kv[1])
                ),
            )
        )
        if family.name in companions and family.type == "gauge":
            continue
        report.findings += _label_findings(name, family, values, resource, cardinality_threshold)
        naming = list(_naming_findings(name, family))
        report.findings += naming
        report.findings += _promtool_findings(name, family, {f.rule for f in naming})
        if family.type == "histogram":
            report.findings += _bucket_findings(name, family)
    names = {family.name: _display_name(family, exposition) for family in exposition.families}
    report.findings += _exemplar_findings(exposition.bad_exemplars, names)
    report.families.sort(key=lambda f: (-f.series, f.name))
    if max_series is not None and report.series > max_series:
        largest = f"{report.families[0].name}: {report.families[0].series} series"
        message = f"{report.series} series in total, over --max-series {max_series}"
        report.findings.append(Finding("too-many-series", None, None, _truncate(largest), message))
    return report


def _exemplar_findings(bad: tuple[BadExemplar, ...], names: dict[str, str]) -> Iterator[Finding]:
    """One finding per family and rule: the first offending exemplar, and how many."""
    by_rule: dict[tuple[str, str], list[BadExemplar]] = {}
    for exemplar in bad:
        if exemplar.length > EXEMPLAR_LABELS_MAX:
            by_rule.setdefault(("exemplar-labels-too-long", exemplar.family), []).append(exemplar)
        if not exemplar.allowed:
            by_rule.setdefault(("exemplar-not-allowed", exemplar.family), []).append(exemplar)
    for (rule, family), found in by_rule.items():
        first, count = found[0], f"{len(found)} exemplar{'s' if len(found) > 1 else ''}"
        if rule == "exemplar-labels-too-long":
            longest = max(e.length for e in found)
            message = (
                f"{count} over {EXEMPLAR_LABELS_MAX} characters of labels ({longest} the longest)"
            )
        else:
            message = f"{count} on {first.sample}, which may not carry one"
        shown = names.get(family, family)
        yield Finding(rule, shown, None, _truncate(first.labels), message)


def _display_name(family: Metric, exposition: Exposition) -> str:
    """The name Prometheus stores: the parsers drop `_total` from counters and `_info`."""
    if family.type == "counter" and family.name not in exposition.untotalled_counters:
        return family.name + "_total"
    if family.type == "info":
        return family.name + "_info"
    return family.name


def _label_values(family: Metric) -> dict[str, dict[str, None]]:
    """label -> its distinct values in first-seen order (a dict keeps the order)."""
    values: dict[str, dict[str, None]] = {}
    for sample in family.samples:
        for key, value in sample.labels.items():
            if key not in _NOT_LABELS:
                values.setdefault(key, {})[value] = None
    return values


def _resource_pairs(families: list[Metric]) -> frozenset[tuple[str, str]]:
    """Labels of target_info: the target's identity (service.instance.id is a UUID by spec)."""
    return frozenset(
        pair
        for family in families
        if family.name in ("target", "target_info")
        for sample in family.samples
        for pair in sample.labels.items()
    )


def _label_findings(
    name: str,
    family: Metric,
    values: dict[str, dict[str, None]],
    resource: frozenset[tuple[str, str]],
    threshold: int,
) -> Iterator[Finding]:
    # Info metrics carry identity and build data (instance id, build date): one series per
    # process, so IDs and times there are expected; so are target_info's labels elsewhere.
    is_info = family.type == "info" or name.endswith("_info")
    for label, distinct in values.items():
        if len(distinct) > threshold:
            message = f"{len(distinct)} distinct values, over the threshold of {threshold}"
            yield Finding("high-cardinality-label", name, label, _first(distinct), message)
        id_name = bool(_ID_NAME.fullmatch(label))  # user_id="42": an ID by its name
        hits: dict[str, list[str]] = {}
        named = False
        for value in distinct:
            rule = _classify(value[:VALUE_MAX])
            if rule is None and id_name and value:
                rule, named = "label-looks-like-id", True
            identity = is_info or (label, value) in resource
            if rule is not None and not (identity and rule in _IDENTITY_RULES):
                hits.setdefault(rule, []).append(value)
        for rule, matched in hits.items():
            what = _WHAT[rule]
            if rule == "label-looks-like-id" and named:
                what += " (the label name says so)"
            message = f"{len(matched)} of {len(distinct)} values look like {what}"
            yield Finding(rule, name, label, _truncate(matched[0]), message)


_IDENTITY_RULES = ("label-looks-like-id", "label-looks-like-timestamp")
_WHAT = {
    "label-looks-like-id": "IDs",
    "label-looks-like-path": "raw URL paths",
    "label-looks-like-email": "email addresses",
    "label-looks-like-timestamp": "times",
}


def _classify(value: str) -> str | None:
    """The label-looks-like-* rule a single value breaks, if any (most specific first)."""
    if "://" not in value and _EMAIL_IN.search(value):
        return "label-looks-like-email"
    if _ISO_TIME.fullmatch(value) or _is_epoch(value):
        return "label-looks-like-timestamp"
    if _is_raw_path(value):
        return "label-looks-like-path"
    if _is_id(value):
        return "label-looks-like-id"
    return None


def _is_epoch(value: str) -> bool:
    """Unix time in s, ms, µs or ns between 2000 and 2100."""
    match = _EPOCH.fullmatch(value)
    return match is not None and _YEAR_2000 <= int(match.group(1)) < _YEAR_2100


def _is_id(value: str) -> bool:
    if value.isdigit():
        return len(value) >= 6  # ports and status codes are shorter
    return any(p.fullmatch(value) for p in (_UUID, _ULID, _HEX, _TOKEN))


def _is_raw_path(value: str) -> bool:
    """A URL or path with a query string or an ID segment; route templates are fine."""
    url = _URL.match(value)
    path = value[url.end() :] if url else value
    if not path.startswith("/") or any(mark in path for mark in ("{", "<", "/:", "*")):
        return False
    if "?" in path:
        return True
    return any(_is_id_segment(s) for s in path.split("/"))


def _is_id_segment(segment: str) -> bool:
    """`42`, a UUID, `3f9a8c7d`, `ch_9f8e7d6c5b4a`, `app.3f9a8c7d.js`: one per entity."""
    digits = sum(c.isdigit() for c in segment)
    return bool(
        segment.isdigit()
        or digits >= 4
        or _is_id(segment)
        or _SHORT_HEX.fullmatch(segment)
        or _EMAIL.fullmatch(segment)
    )


def _naming_findings(name: str, family: Metric) -> Iterator[Finding]:
    kind = family.type
    base = name.removesuffix("_total")
    words = base.split("_")
    if not family.documentation.strip():
        yield Finding("missing-help", name, None, None, "no HELP text")
    if kind == "counter" and not name.endswith("_total"):
        yield Finding("counter-without-total", name, None, None, "counter name lacks _total")
    if kind == "counter" and any(f"_{w}_" in f"_{base}_" for w in _GAUGE_WORDS):
        yield Finding("counter-named-like-gauge", name, None, None, "named like a current value")
    if kind == "gauge":
        suffix = next((s for s in _COUNTER_SUFFIXES if name.endswith("_" + s)), None)
        if suffix and name not in SEMCONV_COUNT_GAUGES:
            message = f"gauge ends in _{suffix}"
            yield Finding("gauge-named-like-counter", name, None, None, message)
    for message in _unit_problems(kind, name, words):
        yield Finding("unit-suffix-mismatch", name, None, None, message)
    units = _BASE_UNITS | _OTHER_UNITS
    if _MEASURES & set(words) and not units & set(words) and not family.unit:
        measure = next(w for w in words if w in _MEASURES)
        message = f"'{measure}' with no unit in the name"
        yield Finding("missing-unit", name, None, None, message)


def _unit_problems(kind: str, name: str, words: list[str]) -> Iterator[str]:
    """`words`: the name without `_total`, split on underscores."""
    last = words[-1]
    if last in _OTHER_UNITS:
        yield f"_{last} is not a base unit (Prometheus uses seconds and bytes)"
    elif (unit := next((w for w in words[:-1] if w in _BASE_UNITS), None)) is not None:
        yield f"unit _{unit} is not the last word"
    if kind in ("histogram", "summary") and name.endswith("_total"):
        yield f"a {kind} named _total (a counter suffix)"
    if kind == "counter" and last in ("ratio", "percent"):
        yield f"a counter of a _{last} (a ratio cannot accumulate; use a gauge)"


# `promtool check metrics` (client_golang's promlint) and the check rules that report the same
# thing: what none of them reported on a family is a `promtool-lint` info, so check and
# promtool never disagree in silence.
_PROMLINT_TYPES = ("counter", "gauge", "histogram", "summary", "gauge_histogram")
_PROMLINT_BASE_UNITS = frozenset({
    "amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres", "seconds",
    "volts",
})  # fmt: skip
_PROMLINT_UNITS = {  # non-base unit -> its base unit
    "minutes": "seconds", "hours": "seconds", "days": "seconds", "weeks": "seconds",
    "kelvins": "kelvin", "fahrenheit": "celsius", "rankine": "celsius", "inches": "meters",
    "yards": "meters", "miles": "meters", "bits": "bytes", "calories": "joules",
    "pounds": "grams", "ounces": "grams",
}  # fmt: skip
_PROMLINT_PREFIXES = (
    "pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
    "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi",
)  # fmt: skip
_PROMLINT_ABBREVIATIONS = (
    "s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d",
)  # fmt: skip
_CAMEL_CASE = re.compile(r"[a-z][A-Z]")
_SUFFIX_RULES = frozenset(
    {"gauge-named-like-counter", "counter-without-total", "unit-suffix-mismatch"}
)
_UNIT_RULES = frozenset({"unit-suffix-mismatch"})


def _promtool_findings(name: str, family: Metric, reported: set[str]) -> Iterator[Finding]:
    """promtool's problems on this family that none of `reported` (check's rules) covers."""
    for label, problem, covering in _promlint(name, family):
        if covering.isdisjoint(reported):
            if name in SEMCONV_COUNT_GAUGES:
                problem += "; an OpenTelemetry semantic-conventions name"
            yield Finding("promtool-lint", name, label, None, problem)


def _promlint(name: str, family: Metric) -> Iterator[tuple[str | None, str, frozenset[str]]]:
    """(label, promtool's message, the check rules covering it), in promtool's words."""
    kind = family.type
    if not family.documentation.strip():
        yield None, "no help text", frozenset({"missing-help"})
    if kind == "counter" and not name.endswith("_total"):
        yield None, 'counter metrics should have "_total" suffix', _SUFFIX_RULES
    elif kind not in ("counter", "unknown") and name.endswith("_total"):
        yield None, 'non-counter metrics should not have "_total" suffix', _SUFFIX_RULES
    if kind != "unknown":  # promtool leaves untyped metrics' suffixes alone
        if kind != "histogram" and name.endswith("_bucket"):
            yield None, 'non-histogram metrics should not have "_bucket" suffix', _SUFFIX_RULES
        for suffix in ("_count", "_sum"):
            if kind not in ("histogram", "summary") and name.endswith(suffix):
                message = f'non-histogram and non-summary metrics should not have "{suffix}" suffix'
                yield None, message, _SUFFIX_RULES
    labels = {key for sample in family.samples for key in sample.labels}
    for label, owner in (("le", "histogram"), ("quantile", "summary")):
        if label in labels and kind != owner:
            yield label, f'non-{owner} metrics should not have "{label}" label', frozenset()
    lower = name.lower()
    for typename in _PROMLINT_TYPES:
        if f"_{typename}_" in lower or lower.endswith(f"_{typename}"):
            yield None, f"metric name should not include type '{typename}'", frozenset()
    if ":" in name:
        yield None, "metric names should not contain ':'", frozenset()
    if _CAMEL_CASE.search(name):
        message = "metric names should be written in 'snake_case' not 'camelCase'"
        yield None, message, frozenset()
    for label in sorted(labels):
        if _CAMEL_CASE.search(label):
            message = "label names should be written in 'snake_case' not 'camelCase'"
            yield label, message, frozenset()
    if any(f"_{a}_" in lower or lower.endswith(f"_{a}") for a in _PROMLINT_ABBREVIATIONS):
        yield None, "metric names should not contain abbreviated units", _UNIT_RULES
    unit = _promlint_unit(name)
    if unit is not None:
        yield None, f'use base unit "{unit[1]}" instead of "{unit[0]}"', _UNIT_RULES


def _promlint_unit(name: str) -> tuple[str, str] | None:
    """(unit, base unit) of the first unit word in `name` when it is not the base unit."""
    for word in name.split("_"):
        for prefix in ("", *_PROMLINT_PREFIXES):
            if not word.startswith(prefix):
                continue
            unit = word[len(prefix) :]
            base = unit if unit in _PROMLINT_BASE_UNITS else _PROMLINT_UNITS.get(unit)
            if base is not None:
                return None if word == base else (word, base)
    return None


def _bucket_findings(name: str, family: Metric) -> Iterator[Finding]:
    series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    for sample in family.samples:
        if sample.name.endswith("_bucket") and "le" in sample.labels:
            key = frozenset((k, v) for k, v in sample.labels.items() if k != "le")
            series.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
    if not series:
        return
    layouts = Counter(tuple(sorted(le for le, _ in b if le != math.inf)) for b in series.values())
    bounds = layouts.most_common(1)[0][0]
    example = _truncate(", ".join(f"{le:g}" for le in bounds))

    def finding(message: str) -> Finding:
        return Finding("histogram-buckets", name, "le", example, message)

    if len(layouts) > 1:
        yield finding(f"{len(layouts)} different bucket layouts: sums over `le` are wrong")
    if any(all(le != math.inf for le, _ in b) for b in series.values()):
        yield finding("no +Inf bucket")
    if len(bounds) < _MIN_BUCKETS:
        yield finding(f"only {len(bounds)} buckets: percentiles will be coarse")
    if len(bounds) > _MAX_BUCKETS:
        yield finding(f"{len(bounds)} buckets: {len(bounds) + 3} series per label set")
    positive = [le for le in bounds if le > 0]
    if name.endswith("_seconds") and positive and min(positive) >= 1 and max(positive) >= 100:
        yield finding("bounds look like milliseconds in a _seconds histogram")
    if any(_not_cumulative(b) for b in series.values()):
        yield finding("bucket counts decrease as le grows")


def _not_cumulative(buckets: list[tuple[float, float]]) -> bool:
    counts = [count for _, count in sorted(buckets)]
    return any(b < a for a, b in itertools.pairwise(counts))


def _first(values: dict[str, None]) -> str:
    return _truncate(next(iter(values)))


def _truncate(text: str) -> str:
    return text if len(text) <= _EXAMPLE_MAX else text[: _EXAMPLE_MAX - 1] + "…"
