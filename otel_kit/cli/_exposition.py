"""Reading a Prometheus or OpenMetrics exposition from a URL, a file or stdin (`check`, `top`).

Parsing is prometheus_client's; this module only fetches the text, picks the parser the format
needs and turns every failure into a `SourceError` whose message a CLI can print as it is.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, cast

import httpx
import typer
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "PROMETHEUS_ACCEPT",
    "TEXT_ACCEPT",
    "BasicAuthOption",
    "BearerTokenOption",
    "Exposition",
    "Samples",
    "SourceError",
    "auth_headers",
    "fetch",
    "flatten",
    "parse",
    "read",
]

# What Prometheus itself sends: `check` sees the format Prometheus would scrape.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TEXT_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
_OPENMETRICS_TYPE = "application/openmetrics-text"
# prometheus_client's text parser renames counter samples to `<name>_total`; the TYPE lines
# still say what the exposition really called them.
_TYPE_COUNTER = re.compile(r"^#\s*TYPE\s+(\S+)\s+counter\s*$", re.MULTILINE)
_REASON_MAX = 120  # a parse error quotes the bad line, which may be a whole HTML page
# The OpenMetrics parser has no annotations.
_parse_openmetrics = cast(
    Callable[[str], Iterable[Metric]], openmetrics_parser.text_string_to_metric_families
)

# Credentials for a protected endpoint, by default the ones the service itself is given.
BearerTokenOption = Annotated[
    str | None,
    typer.Option(
        envvar="OTEL_KIT_METRICS_BEARER_TOKEN",
        help="Send 'Authorization: Bearer TOKEN' (wins over --basic-auth).",
        show_default=False,
    ),
]
BasicAuthOption = Annotated[
    str | None,
    typer.Option(
        envvar="OTEL_KIT_METRICS_BASIC_AUTH",
        metavar="USER:PASSWORD",
        help="Send HTTP basic auth.",
        show_default=False,
    ),
]

# (sample name, labels) -> value: one entry per series.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class SourceError(Exception):
    """The exposition could not be read or parsed; the message says which and why."""


@dataclass(frozen=True)
class Exposition:
    source: str
    openmetrics: bool
    families: list[Metric]
    # Text-format counters declared without `_total` (the parser hides that).
    untotalled_counters: frozenset[str]


def auth_headers(bearer_token: str | None, basic_auth: str | None) -> dict[str, str]:
    """The `Authorization` header for the credentials given (none: no header)."""
    if bearer_token:
        return {"Authorization": f"Bearer {bearer_token}"}
    if basic_auth:
        return {"Authorization": "Basic " + base64.b64encode(basic_auth.encode()).decode()}
    return {}


def fetch(client: httpx.Client, url: str) -> tuple[str, bool]:
    """GET `url`: (body, is OpenMetrics). Raises SourceError."""
    try:
        response = client.get(url)
    except httpx.TimeoutException:
        raise SourceError(f"{url}: no answer within {client.timeout.read} s") from None
    except httpx.HTTPError as exc:
        raise SourceError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if response.status_code == 401:
        given = "authorization" in client.headers
        why = "credentials refused" if given else "give --bearer-token or --basic-auth"
        raise SourceError(f"{url} answered HTTP 401 ({why})")
    if response.status_code != 200:
        raise SourceError(f"{url} answered HTTP {response.status_code}, expected 200")
    content_type = response.headers.get("content-type", "")
    return response.text, content_type.startswith(_OPENMETRICS_TYPE)


def read(
    source: str,
    timeout: float = 10.0,
    accept: str = PROMETHEUS_ACCEPT,
    headers: dict[str, str] | None = None,
) -> Exposition:
    """Read and parse `source`: an http(s) URL, a file path, or `-` for stdin."""
    if "://" in source:
        if not source.startswith(("http://", "https://")):
            raise SourceError(f"{source}: only http:// and https:// URLs can be fetched")
        with httpx.Client(timeout=timeout, headers={"Accept": accept, **(headers or {})}) as client:
            text, openmetrics = fetch(client, source)
    else:
        text = _read_text(source)
        # OpenMetrics ends with `# EOF`; the Prometheus text format has no such line.
        openmetrics = text.rstrip().endswith("# EOF")
    return parse(text, openmetrics, source)


def parse(text: str, openmetrics: bool, source: str = "input") -> Exposition:
    """Parse exposition text with prometheus_client. Raises SourceError."""
    kind = "OpenMetrics" if openmetrics else "Prometheus text"
    try:
        if openmetrics:
            families = list(_parse_openmetrics(text))
        else:
            families = list(text_string_to_metric_families(text))
    # The parsers raise assorted exception types on malformed input; all mean "not parseable".
    except Exception as exc:
        reason = str(exc) if len(str(exc)) <= _REASON_MAX else str(exc)[:_REASON_MAX] + "…"
        raise SourceError(f"{_name(source)} is not valid {kind} exposition: {reason}") from None
    if not families:
        raise SourceError(f"{_name(source)} holds no metrics")
    untotalled = frozenset(
        name for name in _TYPE_COUNTER.findall(text) if not name.endswith("_total")
    )
    return Exposition(source, openmetrics, families, frozenset() if openmetrics else untotalled)


def flatten(families: Iterable[Metric]) -> Samples:
    """Every sample of every family, keyed by (sample name, labels).

    An empty label value is no label at all, as in Prometheus.
    """
    return {
        (sample.name, frozenset((k, v) for k, v in sample.labels.items() if v)): sample.value
        for family in families
        for sample in family.samples
    }


def _read_text(source: str) -> str:
    try:
        if source == "-":
            return sys.stdin.read()
        return Path(source).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{_name(source)} is not UTF-8 text") from None
    except OSError as exc:
        raise SourceError(f"cannot read {_name(source)}: {exc.strerror or exc}") from None


def _name(source: str) -> str:
    return "stdin" if source == "-" else source
