"""`otel-kit check URL|FILE|-`: lint a Prometheus/OpenMetrics exposition, locally and in CI.

Per family: its series count and the labels that drive it; then the findings (rules in
`_lint`). Exit 0 when clean, 1 when a finding at or above `--fail-on` exists, 2 when the input
cannot be read.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from otel_kit._setting_rules import redact_url
from otel_kit.cli._exposition import (
    DEFAULT_MAX_BYTES,
    BasicAuthOption,
    BearerTokenOption,
    Limits,
    MaxBytesOption,
    SourceError,
    auth_headers,
    printable,
    read,
)
from otel_kit.cli._lint import Report, lint

__all__ = ["JSON_VERSION", "register"]

JSON_VERSION = 1  # bump when a key of the --json document changes meaning or goes away
_STYLES = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_ORDER = {"error": 0, "warning": 1, "info": 2}
_INDENT = " " * 8
# Long lines are not wrapped (soft_wrap): CI logs stay one finding detail per line.


class Level(str, Enum):
    warning = "warning"
    error = "error"


def register(app: typer.Typer) -> None:
    app.command("check")(check)


def check(
    source: Annotated[
        str, typer.Argument(metavar="URL|FILE|-", help="http(s) URL, file, or - for stdin.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    max_series: Annotated[
        int | None, typer.Option(min=1, help="Error when the exposition has more series.")
    ] = None,
    fail_on: Annotated[
        Level, typer.Option(help="Exit 1 when a finding at or above this level exists.")
    ] = Level.error,
    cardinality_threshold: Annotated[
        int, typer.Option(min=1, help="Error when a label has more distinct values.")
    ] = 100,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a URL has to answer in full.")
    ] = 10.0,
    max_bytes: MaxBytesOption = DEFAULT_MAX_BYTES,
    bearer_token: BearerTokenOption = None,
    basic_auth: BasicAuthOption = None,
) -> None:
    """Lint a metrics exposition: cardinality, label values that look like IDs, paths,
    emails or times, names, units, HELP texts and histogram buckets."""
    headers = auth_headers(source, bearer_token, basic_auth)
    try:
        exposition = read(source, Limits(timeout, max_bytes), headers=headers)
    except SourceError as exc:  # the message may quote the input
        typer.echo(f"otel-kit check: {printable(str(exc))}", err=True)
        raise typer.Exit(2) from None
    source = redact_url(source)
    report = lint(exposition, cardinality_threshold, max_series)
    failing = {"error"} if fail_on is Level.error else {"error", "warning"}
    failed = any(finding.severity in failing for finding in report.findings)  # never info
    fmt = "openmetrics" if exposition.openmetrics else "prometheus"
    settings = {
        "cardinality_threshold": cardinality_threshold,
        "max_series": max_series,
        "fail_on": fail_on.value,
    }
    if as_json:
        typer.echo(json.dumps(to_json(report, source, fmt, settings, failed), indent=2))
    else:
        _print(Console(highlight=False, soft_wrap=True), report, source, fmt, fail_on, failed)
    raise typer.Exit(1 if failed else 0)


def to_json(
    report: Report, source: str, fmt: str, settings: dict[str, Any], failed: bool
) -> dict[str, Any]:
    """The `--json` document (schema version `JSON_VERSION`, documented in docs/)."""
    count = _count(report)
    return {
        "version": JSON_VERSION,
        "source": source,
        "format": fmt,
        "settings": settings,
        "summary": {
            "families": len(report.families),
            "series": report.series,
            "errors": count["error"],
            "warnings": count["warning"],
            "info": count["info"],
            "failed": failed,
        },
        "families": [
            {
                "name": family.name,
                "type": family.type,
                "help": family.help,
                "series": family.series,
                "labels": [{"name": name, "values": n} for name, n in family.labels],
            }
            for family in report.families
        ],
        "findings": [
            {
                "rule": f.rule,
                "severity": f.severity,
                "family": f.family,
                "label": f.label,
                "example": f.example,
                "message": f.message,
                "hint": f.hint,
            }
            for f in report.findings
        ],
    }


def _print(
    console: Console, report: Report, source: str, fmt: str, fail_on: Level, failed: bool
) -> None:
    """Names, labels and examples come from the exposition: printed through `printable`."""
    families = _plural(len(report.families), "family")
    console.print(Text(f"{printable(source)}: {fmt}, {families}, {report.series} series"))
    # One family per line and its labels indented below: readable at any terminal width.
    console.print(Text("series  type       family: labels (distinct values)", style="bold"))
    for family in report.families:
        line = f"{family.series:>6}  {family.type:<9}  {family.name}"
        console.print(Text(printable(line)))
        if family.labels:
            labels = "  ".join(f"{name}={n}" for name, n in family.labels)
            console.print(Text(printable(f"{'':19}{labels}"), style="dim"))
    for f in sorted(report.findings, key=lambda f: _ORDER[f.severity]):
        where = (f.family or "exposition") + (f"{{{f.label}}}" if f.label else "")
        heading = printable(f"{f.rule}  {where}")
        console.print(Text.assemble((f"{f.severity:8}", _STYLES[f.severity]), heading))
        detail = f.message
        if f.example is not None and f.label == "le":
            detail += f"; buckets: {f.example}"
        elif f.example is not None:
            detail += f', e.g. {f.label}="{f.example}"' if f.label else f", e.g. {f.example}"
        console.print(Text(printable(f"{_INDENT}{detail}")))
        console.print(Text(f"{_INDENT}hint: {f.hint}", style="dim"))
    count = _count(report)
    verdict = f"fails --fail-on {fail_on.value}" if failed else "passes"
    errors, warnings = _plural(count["error"], "error"), _plural(count["warning"], "warning")
    info = f", {count['info']} info" if count["info"] else ""
    console.print(
        Text(f"{errors}, {warnings}{info}: {verdict}")
        if report.findings
        else Text("no problems found")
    )


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def _count(report: Report) -> dict[str, int]:
    count = {"error": 0, "warning": 0, "info": 0}
    for finding in report.findings:
        count[finding.severity] += 1
    return count
