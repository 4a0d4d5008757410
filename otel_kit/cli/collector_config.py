"""`otel-kit collector-config`: write the Collector and Prometheus configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from otel_kit.generate._files import differing, write_files
from otel_kit.generate.collector import CollectorOptions, generate

__all__ = ["register"]

_DEFAULTS = CollectorOptions()


def collector_config(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the files into.")] = Path(
        "collector"
    ),
    otlp_grpc_port: Annotated[
        int, typer.Option(help="OTLP/gRPC port the Collector listens on.")
    ] = _DEFAULTS.otlp_grpc_port,
    otlp_http_port: Annotated[
        int, typer.Option(help="OTLP/HTTP port the Collector listens on.")
    ] = _DEFAULTS.otlp_http_port,
    prometheus_port: Annotated[
        int, typer.Option(help="Port of the Collector's Prometheus exporter (scraped).")
    ] = _DEFAULTS.prometheus_port,
    health_port: Annotated[
        int, typer.Option(help="Port of the Collector's health check.")
    ] = _DEFAULTS.health_port,
    remote_write_url: Annotated[
        str | None,
        typer.Option(help="Also remote-write to this URL (Mimir, Thanos, Cortex, ...)."),
    ] = None,
    collector_host: Annotated[
        str, typer.Option(help="Host name Prometheus reaches the Collector by.")
    ] = _DEFAULTS.collector_host,
    direct: Annotated[
        list[str] | None,
        typer.Option(
            metavar="JOB=HOST:PORT",
            help="A direct-mode app for Prometheus to scrape (repeatable; replaces the example).",
        ),
    ] = None,
    push_interval: Annotated[
        str,
        typer.Option(
            help="How often the apps push (OTEL_METRIC_EXPORT_INTERVAL): series leave the "
            "Collector's page after 4 intervals without a push."
        ),
    ] = _DEFAULTS.push_interval,
    no_direct: Annotated[
        bool, typer.Option("--no-direct", help="No direct-mode scrape job at all.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write otelcol-config.yaml (its agent, remote-write and auth variants) and prometheus.yml."""
    try:
        options = CollectorOptions(
            otlp_grpc_port=otlp_grpc_port,
            otlp_http_port=otlp_http_port,
            prometheus_port=prometheus_port,
            health_port=health_port,
            remote_write_url=remote_write_url,
            collector_host=collector_host,
            direct_targets=_targets(direct, no_direct),
            push_interval=push_interval,
        )
    except ValueError as exc:
        _fail(str(exc))
    files = generate(options)
    clashes = differing(out, files)
    if clashes and not force:
        _fail(f"{', '.join(map(str, clashes))} exist(s) and differ; use --force")
    for path in write_files(out, files):
        typer.echo(f"wrote {path}")
    typer.echo(f"run: otelcol-contrib --config {out / 'otelcol-config.yaml'}")
    if "otelcol-remote-write.yaml" in files:
        typer.echo(f"remote write: add --config {out / 'otelcol-remote-write.yaml'}")
    typer.echo(f"receiver auth: add --config {out / 'otelcol-auth.yaml'} (docs/security.md)")


def _targets(direct: list[str] | None, no_direct: bool) -> tuple[tuple[str, str], ...]:
    if no_direct:
        return ()
    if not direct:
        return _DEFAULTS.direct_targets
    pairs = []
    for item in direct:
        job, sep, target = item.partition("=")
        if not sep:
            _fail(f"--direct {item!r}: expected JOB=HOST:PORT")
        pairs.append((job, target))
    return tuple(pairs)


def _fail(message: str) -> NoReturn:
    typer.echo(f"otel-kit: {message}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("collector-config")(collector_config)
