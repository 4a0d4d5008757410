"""`otel-kit rules`: write the Prometheus recording and alerting rules for an SLO."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from otel_kit.config import load_settings
from otel_kit.generate import rules as generator
from otel_kit.generate._strategy import DEFAULT, STRATEGY_HELP, strategy_option

__all__ = ["register"]


def _buckets(text: str | None) -> tuple[float, ...]:
    """--buckets, else the buckets the service is configured with (OTEL_KIT_DURATION_BUCKETS)."""
    if text is None:
        return load_settings().duration_buckets
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--buckets {text!r}: expected comma-separated numbers") from None


def rules(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory to write the two .yml files to.")
    ] = Path(),
    service: Annotated[
        str | None, typer.Option(help="The SLO's service (its job label); default: every job.")
    ] = None,
    availability_objective: Annotated[
        float, typer.Option(help="Share of requests that must not fail with a 5xx.")
    ] = generator.SLO.availability_objective,
    latency_threshold: Annotated[
        float, typer.Option(help="Seconds; must be a histogram bucket boundary.")
    ] = generator.SLO.latency_threshold,
    latency_objective: Annotated[
        float, typer.Option(help="Share of requests that must be faster than the threshold.")
    ] = generator.SLO.latency_objective,
    buckets: Annotated[
        str | None,
        typer.Option(help="The service's duration buckets; default: OTEL_KIT_DURATION_BUCKETS."),
    ] = None,
    error_ratio: Annotated[
        float, typer.Option(help="5xx share that opens a ticket.")
    ] = generator.Thresholds.error_ratio,
    pool_saturation: Annotated[
        float, typer.Option(help="Pool used/max that opens a ticket.")
    ] = generator.Thresholds.pool_saturation,
    outbound_error_ratio: Annotated[
        float, typer.Option(help="Failed-call share per dependency that opens a ticket.")
    ] = generator.Thresholds.outbound_error_ratio,
    translation_strategy: Annotated[
        str, typer.Option(help=STRATEGY_HELP, callback=strategy_option)
    ] = DEFAULT,
) -> None:
    """Write otel-kit-recording.yml and otel-kit-alerts.yml (SLO burn-rate alerts and more)."""
    try:
        slo = generator.SLO(
            service=service,
            availability_objective=availability_objective,
            latency_threshold=latency_threshold,
            latency_objective=latency_objective,
            buckets=_buckets(buckets),
        )
        thresholds = generator.Thresholds(error_ratio, pool_saturation, outbound_error_ratio)
    except ValueError as exc:  # ConfigError (OTEL_KIT_DURATION_BUCKETS) is one too
        typer.echo(f"otel-kit rules: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in generator.write(output, slo, thresholds, translation_strategy):
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command()(rules)
