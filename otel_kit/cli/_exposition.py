"""Reading a Prometheus or OpenMetrics exposition from a URL, a file or stdin (`check`, `top`).

Parsing is prometheus_client's; this module only fetches the text, picks the parser the format
needs and turns every failure into a `SourceError` whose message a CLI can print as it is.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import re
import socket
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import httpx
import typer
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from otel_kit._setting_rules import redact_url

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EXEMPLAR_LABELS_MAX",
    "PROMETHEUS_ACCEPT",
    "TEXT_ACCEPT",
    "BadExemplar",
    "BasicAuthOption",
    "BearerTokenOption",
    "Exposition",
    "Limits",
    "MaxBytesOption",
    "Samples",
    "SourceError",
    "auth_headers",
    "fetch",
    "flatten",
    "parse",
    "parse_size",
    "printable",
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

# Credentials for a protected endpoint: by default the ones the service itself is given, sent
# only where that service listens (auth_headers).
BEARER_TOKEN_ENV = "OTEL_KIT_METRICS_BEARER_TOKEN"
BASIC_AUTH_ENV = "OTEL_KIT_METRICS_BASIC_AUTH"
_HOST_ENV = "OTEL_EXPORTER_PROMETHEUS_HOST"
_PROMETHEUS_HOST_ENV = ("OTEL_KIT_PROMETHEUS_HOST", _HOST_ENV)  # config.py's order
_ANY_ADDRESS = ("", "0.0.0.0", "::")
_ENV_DEFAULT = " Default: ${}, sent only to a loopback host or $" + _HOST_ENV + "."
BearerTokenOption = Annotated[
    str | None,
    typer.Option(
        help="Send 'Authorization: Bearer TOKEN' (wins over --basic-auth)."
        + _ENV_DEFAULT.format(BEARER_TOKEN_ENV),
        show_default=False,
    ),
]
BasicAuthOption = Annotated[
    str | None,
    typer.Option(
        metavar="USER:PASSWORD",
        help="Send HTTP basic auth." + _ENV_DEFAULT.format(BASIC_AUTH_ENV),
        show_default=False,
    ),
]

DEFAULT_MAX_BYTES = 64 * 1024**2
_INFLATE_STEP = 1024**2  # zlib's output buffer for one call: never a second copy of the cap
_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|GiB)?", re.IGNORECASE)
_UNITS = {"": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(value: str | int) -> int:
    """`--max-bytes`: a number of bytes, optionally with a KiB, MiB or GiB suffix."""
    if isinstance(value, int):  # the default
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None or int(match[1]) == 0:
        raise typer.BadParameter(
            f"{value!r} is not a size: give a positive number of bytes, optionally with "
            "KiB, MiB or GiB (e.g. 1048576, 512KiB, 64MiB)"
        )
    return int(match[1]) * _UNITS[(match[2] or "").lower()]


MaxBytesOption = Annotated[
    int,
    typer.Option(
        parser=parse_size,
        metavar="BYTES",
        show_default="64MiB",
        help="Refuse an answer larger than this, as sent or once decompressed "
        "(e.g. 1048576, 512KiB, 64MiB).",
    ),
]

# Every C0 control character, DEL and C1 (ESC, BEL, CSI...) -> its `\x..` escape.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


@dataclass(frozen=True)
class Limits:
    """What one read may cost: `timeout` seconds in all, `max_bytes` of body."""

    timeout: float = 10.0
    max_bytes: int = DEFAULT_MAX_BYTES


# (sample name, labels) -> value: one entry per series.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class SourceError(Exception):
    """The exposition could not be read or parsed; the message says which and why."""


@dataclass(frozen=True)
class BadExemplar:
    """An exemplar OpenMetrics forbids, taken off its sample so the rest can be parsed."""

    family: str
    sample: str  # the sample's name
    labels: str  # its label set as written
    length: int  # code points of its label names and values
    allowed: bool  # on a counter's _total or a histogram's _bucket


@dataclass(frozen=True)
class Exposition:
    source: str
    openmetrics: bool
    families: list[Metric]
    # Text-format counters declared without `_total` (the parser hides that).
    untotalled_counters: frozenset[str]
    bad_exemplars: tuple[BadExemplar, ...] = ()


def auth_headers(
    url: str,
    bearer_token: str | None,
    basic_auth: str | None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """The `Authorization` header for `url` (none: no header).

    Credentials given on the command line go to the URL given. The environment's are the
    service's own secret: they go only where that service listens, a loopback address or
    the host its metrics port binds, so `check https://elsewhere/metrics` cannot leak them.
    """
    if not (bearer_token or basic_auth) and _env_credentials_allowed(url, environ):
        bearer_token, basic_auth = environ.get(BEARER_TOKEN_ENV), environ.get(BASIC_AUTH_ENV)
    if bearer_token:
        return {"Authorization": f"Bearer {bearer_token}"}
    if basic_auth:
        return {"Authorization": "Basic " + base64.b64encode(basic_auth.encode()).decode()}
    return {}


def _env_credentials_allowed(url: str, environ: Mapping[str, str]) -> bool:
    try:
        host = httpx.URL(url).host.lower()
    except httpx.InvalidURL:
        return False
    configured = next((environ[n] for n in _PROMETHEUS_HOST_ENV if environ.get(n)), "")
    configured = configured.strip().strip("[]").lower()
    if host and host == configured and configured not in _ANY_ADDRESS:
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def printable(text: str) -> str:
    """`text` with control characters (C0, DEL, C1: ESC, BEL, newlines...) written as `\\x1b`.

    Everything `check` and `top` print from a scraped exposition goes through it: a label
    value must not move the cursor, retitle or clear the terminal, or forge a line of output.
    """
    return text.translate(_ESCAPES)


def fetch(
    url: str,
    limits: Limits,
    accept: str = PROMETHEUS_ACCEPT,
    headers: Mapping[str, str] | None = None,
) -> tuple[str, bool]:
    """GET `url`: (body, is OpenMetrics), within `limits`. Raises SourceError."""
    shown = redact_url(url)
    # gzip only: `_body` inflates it itself, so it can stop at the cap.
    sent = {"Accept": accept, "Accept-Encoding": "gzip", **(headers or {})}
    # A client per fetch: each one connects, so the watchdog sees the socket it must cut.
    body: bytearray | None = None
    with httpx.Client(timeout=limits.timeout, headers=sent) as client, _Watchdog(limits) as dog:
        try:
            with client.stream("GET", url, extensions={"trace": dog.trace}) as response:
                if response.status_code == 401:
                    raise SourceError(f"{shown} answered HTTP 401 ({_refused(sent)})")
                if response.status_code != 200:
                    status = response.status_code
                    raise SourceError(f"{shown} answered HTTP {status}, expected 200")
                body = _body(response, shown, limits.max_bytes)
        except httpx.HTTPError as exc:
            if not (dog.expired.is_set() or isinstance(exc, httpx.TimeoutException)):
                raise SourceError(f"cannot reach {shown}: {exc or type(exc).__name__}") from None
        # A cut socket may also read as the end of a body that has no Content-Length.
        if dog.expired.is_set() or body is None:
            message = f"{shown}: no complete answer within --timeout {limits.timeout:g} s"
            raise SourceError(message)
    content_type = response.headers.get("content-type", "")
    # The formats are UTF-8 by specification.
    return body.decode("utf-8", errors="replace"), content_type.startswith(_OPENMETRICS_TYPE)


class _Watchdog:
    """Ends a fetch `limits.timeout` after it started, even inside a blocking read.

    httpx's timeout bounds each read, so a server sending a byte every second would hold a
    fetch forever; shutting the socket down wakes the read, which then fails.
    """

    def __init__(self, limits: Limits) -> None:
        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer = threading.Timer(limits.timeout, self._expire)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._timer.join()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's `trace` extension: remember the socket once connected (or TLS-wrapped)."""
        if event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket")
            if self.expired.is_set():  # connected just after the deadline
                self._expire()

    def _expire(self) -> None:
        self.expired.set()
        with self._lock, contextlib.suppress(OSError):
            if self._socket is not None:
                self._socket.shutdown(socket.SHUT_RDWR)


def _refused(headers: Mapping[str, str]) -> str:
    if "Authorization" in headers:
        return "credentials refused"
    hint = "give --bearer-token or --basic-auth"
    if os.environ.get(BEARER_TOKEN_ENV) or os.environ.get(BASIC_AUTH_ENV):  # withheld
        hint = f"$OTEL_KIT_METRICS_* are sent only to a loopback host or ${_HOST_ENV}: {hint}"
    return hint


def _body(response: httpx.Response, shown: str, max_bytes: int) -> bytearray:
    """The body, decompressed, never holding more than `max_bytes` of it."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise SourceError(f"{shown}: unsupported Content-Encoding {encoding!r} (asked for gzip)")
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        detail = f" (it announces {int(announced)} bytes)"
        raise SourceError(_too_large(shown, max_bytes, detail))
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding != "identity" else None
    body, received = bytearray(), 0
    try:
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > max_bytes:
                raise SourceError(_too_large(shown, max_bytes))
            while chunk:
                if inflate is None:
                    data, chunk = chunk, b""
                else:  # in steps, and one byte past the cap at most: a gzip bomb stops there
                    data = inflate.decompress(chunk, min(max_bytes - len(body), _INFLATE_STEP) + 1)
                    chunk = inflate.unconsumed_tail
                body += data
                if len(body) > max_bytes:
                    raise SourceError(_too_large(shown, max_bytes, " once decompressed"))
        if inflate is not None:  # what a last match left in zlib's window: a few bytes
            body += inflate.flush()
    except zlib.error as exc:
        raise SourceError(f"{shown}: the gzip body is corrupt ({exc})") from None
    return body


def _too_large(shown: str, max_bytes: int, detail: str = "") -> str:
    return (
        f"{shown}: the answer is over --max-bytes {max_bytes}{detail}; raise --max-bytes to read it"
    )


def read(
    source: str,
    limits: Limits = Limits(),
    accept: str = PROMETHEUS_ACCEPT,
    headers: Mapping[str, str] | None = None,
) -> Exposition:
    """Read and parse `source`: an http(s) URL, a file path, or `-` for stdin."""
    if "://" in source:
        if not source.startswith(("http://", "https://")):
            raise SourceError(
                f"{redact_url(source)}: only http:// and https:// URLs can be fetched"
            )
        text, openmetrics = fetch(source, limits, accept, headers)
    else:
        text = _read_text(source, limits.max_bytes)
        # OpenMetrics ends with `# EOF`; the Prometheus text format has no such line.
        openmetrics = text.rstrip().endswith("# EOF")
    return parse(text, openmetrics, source)


def parse(text: str, openmetrics: bool, source: str = "input") -> Exposition:
    """Parse exposition text with prometheus_client. Raises SourceError."""
    kind = "OpenMetrics" if openmetrics else "Prometheus text"
    bad: tuple[BadExemplar, ...] = ()
    if openmetrics and "# {" in text:
        text, bad = _take_bad_exemplars(text)
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
    untotalled = frozenset() if openmetrics else untotalled
    return Exposition(source, openmetrics, families, untotalled, bad)


EXEMPLAR_LABELS_MAX = 128  # OpenMetrics 1.0: code points of an exemplar's label names and values
_LABEL_SET = r'\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\}'
_EXEMPLAR = re.compile(
    rf"(?P<sample>(?P<name>[^\s{{#]+)(?:{_LABEL_SET})?[ \t]+\S+(?:[ \t]+\S+)?)"
    rf"[ \t]+#[ \t]+(?P<labels>{_LABEL_SET})(?P<rest>.*)"
)
_PAIR = re.compile(r'([^\s=,{}"]+)\s*=\s*"((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")
_TYPE = re.compile(r"#\s*TYPE\s+(\S+)\s+(\S+)")


def _take_bad_exemplars(text: str) -> tuple[str, tuple[BadExemplar, ...]]:
    """`text` without the exemplars OpenMetrics forbids (prometheus_client's parser rejects
    the whole exposition for one), and those exemplars."""
    lines, bad, family, kind = text.split("\n"), [], "", ""
    for i, line in enumerate(lines):
        if line.startswith("#"):
            declared = _TYPE.match(line)
            if declared:
                family, kind = declared.groups()
            continue
        match = _EXEMPLAR.fullmatch(line)
        if match is None:
            continue
        name, labels = match["name"], match["labels"]
        length = sum(
            len(key) + len(_UNESCAPE.sub(r"\1", value)) for key, value in _PAIR.findall(labels)
        )
        allowed = (kind in ("histogram", "gaugehistogram") and name.endswith("_bucket")) or (
            kind == "counter" and name.endswith("_total")
        )
        if length > EXEMPLAR_LABELS_MAX or not allowed:
            bad.append(BadExemplar(family, name, labels, length, allowed))
            lines[i] = match["sample"]
    return "\n".join(lines), tuple(bad)


def flatten(families: Iterable[Metric]) -> Samples:
    """Every sample of every family, keyed by (sample name, labels).

    An empty label value is no label at all, as in Prometheus.
    """
    return {
        (sample.name, frozenset((k, v) for k, v in sample.labels.items() if v)): sample.value
        for family in families
        for sample in family.samples
    }


def _read_text(source: str, max_bytes: int) -> str:
    try:
        if source == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with Path(source).open("rb") as file:
                data = file.read(max_bytes + 1)
    except OSError as exc:
        raise SourceError(f"cannot read {_name(source)}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        message = f"{_name(source)} is over --max-bytes {max_bytes}"
        raise SourceError(f"{message}; raise --max-bytes to read it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{_name(source)} is not UTF-8 text") from None


def _name(source: str) -> str:
    return "stdin" if source == "-" else redact_url(source)
