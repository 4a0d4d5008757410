"""`otel-kit dashboard`: write the Grafana dashboards (JSON) generated from the metric catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from otel_kit.generate import dashboards
from otel_kit.generate._strategy import DEFAULT, STRATEGY_HELP, strategy_option

__all__ = ["register"]


def dashboard(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory to write the *.json files to.")
    ] = Path(),
    translation_strategy: Annotated[
        str, typer.Option(help=STRATEGY_HELP, callback=strategy_option)
    ] = DEFAULT,
) -> None:
    """Write the Grafana dashboards: service overview, database, cache, outbound, runtime."""
    for path in dashboards.write(output, translation_strategy):
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command()(dashboard)
