"""Commands. `otel-kit config` shows the effective settings and where each can be set."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from otel_kit import __version__
from otel_kit._setting_rules import shown
from otel_kit.cli import check, collector_config, dashboard, rules, run, top
from otel_kit.config import ConfigError, load_settings, setting_docs

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="otel-kit: OpenTelemetry metrics inside, Prometheus outside.",
)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"otel-kit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """otel-kit: OpenTelemetry metrics, Prometheus outside."""


@app.command()
def config() -> None:
    """Show every setting: its effective value and the environment variables that set it."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"otel-kit: {exc}", err=True)
        raise typer.Exit(2) from None
    docs = setting_docs()
    console = Console()
    # Names are never cut (they are what one copies); the value column folds instead. Where
    # the two name columns leave the values too little room, the variables go under the name.
    names = max(len(doc.name) for doc in docs)
    env = max(len(name) for doc in docs for name in doc.env)
    stacked = console.width < names + env + _MIN_VALUE_WIDTH + 8  # + padding, dividers
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    if stacked:
        table.add_column("setting (keyword argument)\n  environment variables", no_wrap=True)
    else:
        table.add_column("setting (keyword argument)", no_wrap=True)
        table.add_column("environment variables", no_wrap=True)
    table.add_column("value", overflow="fold", min_width=_MIN_VALUE_WIDTH)
    for doc in docs:
        value = shown(doc.name, getattr(settings, doc.name))
        if stacked:
            table.add_row("\n".join([doc.name, *(f"  {name}" for name in doc.env)]), value)
        else:
            table.add_row(doc.name, "\n".join(doc.env), value)
    console.print(table)


_MIN_VALUE_WIDTH = 20


run.register(app)
check.register(app)
top.register(app)
collector_config.register(app)
dashboard.register(app)
rules.register(app)
