"""PromQL for a Prometheus translation strategy other than the default: the generated queries,
written with the default names (`http_server_request_duration_seconds_count`, `http_route`),
rewritten to the names Prometheus stores under that strategy (`otlp.translation_strategy`, or
otel-kit's `prometheus_translation_strategy` in direct mode), quoted where they are UTF-8:
`{"http.server.request.duration_seconds_count", "http.route"="/"}`.

Only the catalogue's metrics and attributes are renamed; `up`, `target_info`, `job`,
`instance`, `le`, the Collector's own `otelcol_*` series and the recording rules' names stay.
"""

from __future__ import annotations

import functools
import re

from otel_kit import catalogue
from otel_kit.catalogue import (
    TRANSLATION_STRATEGIES,
    MetricSpec,
    prometheus_label,
    prometheus_name,
)

__all__ = ["DEFAULT", "STRATEGY_HELP", "Rewrite", "rewrite", "strategy_option"]

DEFAULT = TRANSLATION_STRATEGIES[0]
_LEGACY = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# What a query is made of, for the rewrite: strings and range selectors are left alone.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|[a-zA-Z_:][a-zA-Z0-9_:]*|\s+|.', re.S)
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_LABEL_VALUES = re.compile(r"label_values\((.*), ([a-zA-Z_][a-zA-Z0-9_]*)\)")
_TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")


def _specs() -> list[MetricSpec]:
    return [v for v in vars(catalogue).values() if isinstance(v, MetricSpec)]


class Rewrite:
    """The default names -> `strategy`'s, for queries, Grafana legends and alert templates."""

    def __init__(self, strategy: str) -> None:
        self.strategy = strategy
        self.series: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        for spec in _specs():
            counter = spec.kind == "counter"
            new = prometheus_name(spec.name, spec.unit, monotonic_sum=counter, strategy=strategy)
            suffixes = ("_bucket", "_count", "_sum") if spec.kind == "histogram" else ("",)
            for suffix in suffixes:
                self.series[spec.prometheus + suffix] = new + suffix
            for key in spec.attributes:
                self.labels[prometheus_label(key)] = prometheus_label(key, strategy)

    def query(self, expr: str) -> str:
        tokens = _TOKENS.findall(expr)
        out: list[str] = []
        for i, token in enumerate(tokens):
            if token in self.labels and self._is_label(tokens, i):
                out.append(_quoted(self.labels[token]))
            elif token in self.series and not self._is_label(tokens, i):
                new = self.series[token]
                if _LEGACY.fullmatch(new):
                    out.append(new)
                    continue
                following = next((t for t in tokens[i + 1 :] if not t.isspace()), "")
                # name{a="b"} -> {"name", a="b"}; a bare name -> {"name"}
                out.append(f'{{"{new}", ' if following == "{" else f'{{"{new}"}}')
                if following == "{":
                    self._skip_brace(tokens, i)
            else:
                out.append(token)
        return "".join(out).replace(", }", "}")

    @staticmethod
    def _is_label(tokens: list[str], i: int) -> bool:
        """A label where a matcher follows (`=`, `!=`, `=~`, `!~`) or in a by/on/... list."""
        following = next((t for t in tokens[i + 1 :] if not t.isspace()), "")
        if following in ("=", "!"):
            return True
        depth = 0
        for j in range(i - 1, -1, -1):
            if tokens[j] == ")":
                depth += 1
            elif tokens[j] == "(":
                if depth == 0:
                    before = next((t for t in reversed(tokens[:j]) if not t.isspace()), "")
                    return before in _GROUPINGS
                depth -= 1
        return False

    @staticmethod
    def _skip_brace(tokens: list[str], i: int) -> None:
        for j in range(i + 1, len(tokens)):
            if tokens[j] == "{":
                tokens[j] = ""
                return

    def variable(self, query: str) -> str:
        """A Grafana variable: `label_values(selector, label)`."""
        match = _LABEL_VALUES.fullmatch(query)
        if not match:
            return self.query(query)
        label = self.labels.get(match[2], match[2])
        return f"label_values({self.query(match[1])}, {label})"

    def legend(self, text: str) -> str:
        return _LEGEND.sub(lambda m: "{{" + self.labels.get(m[1], m[1]) + "}}", text)

    def template(self, text: str) -> str:
        """Alert annotations: `$labels.http_route` -> `(index $labels "http.route")`."""

        def label(match: re.Match[str]) -> str:
            new = self.labels.get(match[1], match[1])
            return f"$labels.{new}" if _LEGACY.fullmatch(new) else f'(index $labels "{new}")'

        return _TEMPLATE_LABEL.sub(label, text)


_GROUPINGS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


STRATEGY_HELP = (
    "The names Prometheus stores: its otlp.translation_strategy, or the apps' "
    f"OTEL_KIT_PROMETHEUS_TRANSLATION_STRATEGY ({', '.join(TRANSLATION_STRATEGIES)})."
)


def strategy_option(value: str) -> str:
    """The CLI's --translation-strategy, in any case; a bad one is a usage error (exit 2)."""
    for strategy in TRANSLATION_STRATEGIES:
        if strategy.lower() == value.lower():
            return strategy
    import typer  # the CLI's; generators are imported without it too

    raise typer.BadParameter(f"{value!r}: allowed: {', '.join(TRANSLATION_STRATEGIES)}")


@functools.cache
def rewrite(strategy: str) -> Rewrite:
    if strategy not in TRANSLATION_STRATEGIES:
        raise ValueError(
            f"translation strategy {strategy!r}: allowed: {', '.join(TRANSLATION_STRATEGIES)}"
        )
    return Rewrite(strategy)


def _quoted(label: str) -> str:
    return label if _LEGACY.fullmatch(label) else f'"{label}"'
