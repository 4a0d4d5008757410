"""`otel-kit top URL`: a live terminal view of a service, from its /metrics alone.

Every `--interval` seconds it scrapes again and shows what happened in between: per route
requests/s, 5xx % and p50/p95/p99 from the histogram buckets' increases, requests in
progress; database operations, cache hit ratio and outbound calls when the service has them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated

import typer
from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from otel_kit._setting_rules import redact_url
from otel_kit.catalogue import (
    CACHE_REQUESTS,
    DB_CLIENT_OPERATION_DURATION,
    HTTP_CLIENT_REQUEST_DURATION,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_DURATION,
    MetricSpec,
)
from otel_kit.cli._exposition import (
    DEFAULT_MAX_BYTES,
    TEXT_ACCEPT,
    BasicAuthOption,
    BearerTokenOption,
    Limits,
    MaxBytesOption,
    Samples,
    SourceError,
    auth_headers,
    fetch,
    flatten,
    parse,
    printable,
)
from otel_kit.cli._rates import Labels, counter_windows, histogram_windows

__all__ = ["register"]

Grouping = Callable[[Labels], str]

_NARROW = 72  # below this many columns p50 is left out so route names keep some room
_WIDTHS = {"p50": 7, "p95": 7, "p99": 7, "lookups/s": 9}


class Sort(str, Enum):
    rps = "rps"
    errors = "errors"
    p50 = "p50"
    p95 = "p95"
    p99 = "p99"
    name = "name"


@dataclass(frozen=True)
class Row:
    name: str
    rate: float
    error_ratio: float | None
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass
class Frame:
    seconds: float  # between the two scrapes
    routes: list[Row] = field(default_factory=list)
    database: list[Row] = field(default_factory=list)
    outbound: list[Row] = field(default_factory=list)
    cache: list[tuple[str, float, float | None]] = field(default_factory=list)  # name, /s, hit
    active: dict[str, float] = field(default_factory=dict)  # method -> requests in progress


def register(app: typer.Typer) -> None:
    app.command("top")(top)


def top(
    url: Annotated[
        str, typer.Argument(metavar="URL", help="The service's metrics URL (http or https).")
    ],
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between scrapes.")] = 2.0,
    sort: Annotated[Sort, typer.Option(help="Order of the rows.")] = Sort.rps,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame after two scrapes and exit.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a scrape has to answer in full.")
    ] = 5.0,
    max_bytes: MaxBytesOption = DEFAULT_MAX_BYTES,
    bearer_token: BearerTokenOption = None,
    basic_auth: BasicAuthOption = None,
) -> None:
    """Live view of a service from its /metrics: per route req/s, errors, p50/p95/p99."""
    console = Console()
    headers = auth_headers(url, bearer_token, basic_auth)
    limits = Limits(timeout, max_bytes)

    def scrape() -> tuple[float, Samples]:
        text, openmetrics = fetch(url, limits, TEXT_ACCEPT, headers)
        return time.monotonic(), flatten(parse(text, openmetrics, url).families)

    shown = redact_url(url)
    try:
        before = scrape()
        if once:  # a rate needs two scrapes: the frame is what happened between them
            time.sleep(interval)
            frame = _frame(before, scrape())
            console.print(render(frame, shown, interval, sort))
            if _idle(frame):  # zeros alone read as a broken tool
                console.print(
                    Text(
                        f"no traffic in the {frame.seconds:.1f}s between the two scrapes "
                        "(--once shows what happens during --interval)",
                        style="dim",
                    )
                )
            return
    except SourceError as exc:  # the message may quote the scraped text
        typer.echo(f"otel-kit top: {printable(str(exc))}", err=True)
        raise typer.Exit(2) from None
    # Ctrl-C is how top ends: exit 0; Live has restored the terminal by then.
    with contextlib.suppress(KeyboardInterrupt):
        _live(console, scrape, shown, interval, sort, before)


def _live(
    console: Console,
    scrape: Callable[[], tuple[float, Samples]],
    url: str,
    interval: float,
    sort: Sort,
    before: tuple[float, Samples],
) -> None:
    frame: Frame | None = None
    with Live(
        render(frame, url, interval, sort), console=console, screen=True, auto_refresh=False
    ) as live:
        while True:
            time.sleep(interval)
            problem = None
            try:
                after = scrape()
                frame, before = _frame(before, after), after
            except SourceError as exc:  # keep showing the last frame; the service may be back
                problem = str(exc)
            live.update(render(frame, url, interval, sort, problem), refresh=True)


def _frame(before: tuple[float, Samples], after: tuple[float, Samples]) -> Frame:
    return build_frame(before[1], after[1], after[0] - before[0])


def _idle(frame: Frame) -> bool:
    rows = frame.routes + frame.database + frame.outbound
    return not any(row.rate for row in rows) and not any(rate for _, rate, _ in frame.cache)


def build_frame(before: Samples, after: Samples, seconds: float) -> Frame:
    """Everything `top` shows, from two scrapes `seconds` apart."""
    frame = Frame(seconds)

    def rows(spec: MetricSpec, group: Grouping, is_error: Callable[[Labels], bool]) -> list[Row]:
        windows = histogram_windows(before, after, spec.prometheus, group, is_error)
        return [
            Row(name, w.count / seconds, w.error_ratio, *map(w.quantile, (0.5, 0.95, 0.99)))
            for name, w in windows.items()
        ]

    frame.routes = rows(HTTP_SERVER_REQUEST_DURATION, _route, _server_error)
    frame.database = rows(DB_CLIENT_OPERATION_DURATION, _db_operation, _has_error)
    frame.outbound = rows(HTTP_CLIENT_REQUEST_DURATION, _peer, _client_error)
    cache = CACHE_REQUESTS.prometheus
    lookups = counter_windows(before, after, cache, lambda labels: labels.get("cache_name", ""))
    hits = counter_windows(before, after, cache, _cache_hit)
    for name, total in sorted(lookups.items()):
        hit = hits.get(name, 0.0) / total if total > 0 else None
        frame.cache.append((name, total / seconds, hit))
    for (sample, key), value in after.items():
        if sample == HTTP_SERVER_ACTIVE_REQUESTS.prometheus:
            method = dict(key).get("http_request_method", "")
            frame.active[method] = frame.active.get(method, 0.0) + value
    return frame


def _cache_hit(labels: Labels) -> str | None:
    return labels.get("cache_name", "") if labels.get("cache_result") == "hit" else None


def _route(labels: Labels) -> str:
    return f"{labels.get('http_request_method', '')} {labels.get('http_route', '(unmatched)')}"


def _db_operation(labels: Labels) -> str:
    parts = ("db_system_name", "db_namespace", "db_operation_name")
    return " ".join(labels[k] for k in parts if labels.get(k))


def _peer(labels: Labels) -> str:
    peer = labels.get("service_peer_name") or ":".join(
        labels[k] for k in ("server_address", "server_port") if labels.get(k)
    )
    return f"{labels.get('http_request_method', '')} {peer}"


def _server_error(labels: Labels) -> bool:
    return labels.get("http_response_status_code", "").startswith("5")


def _has_error(labels: Labels) -> bool:
    return "error_type" in labels


def _client_error(labels: Labels) -> bool:
    return _has_error(labels) or _server_error(labels)


def _sorted(rows: Iterable[Row], sort: Sort) -> list[Row]:
    if sort is Sort.name:
        return sorted(rows, key=lambda r: r.name)
    value: Callable[[Row], float | None] = {
        Sort.rps: lambda r: r.rate,
        Sort.errors: lambda r: r.error_ratio,
        Sort.p50: lambda r: r.p50,
        Sort.p95: lambda r: r.p95,
        Sort.p99: lambda r: r.p99,
    }[sort]
    # Highest first; rows without a value (no traffic) last; ties by name.
    return sorted(rows, key=lambda r: (-(value(r) or -1.0), r.name))


def format_seconds(value: float | None) -> str:
    """A latency for a narrow column: `-`, `4.2ms`, `487.5ms`, `1.25s`."""
    if value is None:
        return "-"
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def render(
    frame: Frame | None, url: str, interval: float, sort: Sort, problem: str | None = None
) -> RenderableType:
    """One screen of `top`; its tables are laid out for the width it is drawn at.

    Route, operation, peer and cache names come from the scrape: printed through `printable`.
    """
    return _Screen(frame, url, interval, sort, problem)


@dataclass(frozen=True)
class _Screen:
    frame: Frame | None
    url: str
    interval: float
    sort: Sort
    problem: str | None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = options.max_width >= _NARROW
        quit_hint = "  Ctrl-C quits" if wide else ""
        yield Text.assemble(
            ("otel-kit top ", "bold"), printable(self.url), f"  every {self.interval:g}s{quit_hint}"
        )
        if self.problem:
            yield Text(f"last scrape failed: {printable(self.problem)}", style="bold red")
        frame = self.frame
        if frame is None:
            yield Text("waiting for the second scrape…")
            return
        yield _summary(frame)
        for heading, rate, rows in (
            ("HTTP route", "req/s", frame.routes),
            ("DB operation", "ops/s", frame.database),
            ("outbound HTTP", "req/s", frame.outbound),
        ):
            if rows:
                yield _table(heading, rate, _sorted(rows, self.sort), wide, options.max_width)
        if frame.cache:
            columns = ["lookups/s", "hit %"]
            table = _new_table("cache", columns)
            room = _name_room(table, options.max_width, columns)
            for name, per_second, hit in frame.cache:
                table.add_row(_name(name, room), f"{per_second:.1f}", _percent(hit))
            yield table


def _summary(frame: Frame) -> Text:
    total = sum(row.rate for row in frame.routes)
    errors = sum(row.rate * (row.error_ratio or 0.0) for row in frame.routes)
    active = sorted(frame.active.items())
    by_method = printable(", ".join(f"{m} {n:g}" for m, n in active if n))
    return Text(
        f"{total:.1f} req/s  5xx {_percent(errors / total if total else None)}"
        f"  in progress {sum(frame.active.values()):g}"
        + (f" ({by_method})" if by_method else "")
        + f"  last {frame.seconds:.1f}s"
    )


def _table(heading: str, rate: str, rows: list[Row], wide: bool, width: int) -> Table:
    columns = [rate, "5xx %" if heading == "HTTP route" else "err %"]
    columns += [*(["p50"] if wide else []), "p95", "p99"]
    table = _new_table(heading, columns)
    room = _name_room(table, width, columns)
    for row in rows:
        latencies = [row.p50, row.p95, row.p99] if wide else [row.p95, row.p99]
        table.add_row(
            _name(row.name, room),
            f"{row.rate:.1f}",
            _percent(row.error_ratio),
            *(format_seconds(v) for v in latencies),
        )
    return table


def _name_room(table: Table, width: int, columns: list[str]) -> int:
    """The name column's width in `_new_table` at `width` (the other columns are fixed, and
    each has a blank on either side and a divider before it), made the column's own: rich's
    layout of a ratio column differs between versions by a character or two."""
    # One character spare: rich 13.0 lays the same table out a character wider than rich 14.
    room = width - sum(_WIDTHS.get(column, 6) for column in columns) - 3 * len(columns) - 1
    name = table.columns[0]
    name.ratio, name.width = None, max(room, name.min_width or 0)
    return room


def _name(name: str, room: int) -> Text:
    """A scraped name (never read as markup) cut in the middle when longer than `room`: routes
    and operations that differ only at the end (`.../members`, `.../invites`) stay apart."""
    name = printable(name)
    if len(name) > room >= 8:
        head = (room - 1) // 2
        name = name[:head] + "…" + name[len(name) - (room - 1 - head) :]
    return Text(name)


def _new_table(heading: str, columns: list[str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=True)
    table.add_column(heading, ratio=1, no_wrap=True, overflow="ellipsis", min_width=8)
    for column in columns:  # fixed widths line the sections' columns up
        table.add_column(column, justify="right", no_wrap=True, width=_WIDTHS.get(column, 6))
    return table
