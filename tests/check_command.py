"""`otel-kit check` in-process for its tests (typer's CliRunner), unit and integration: the
command's result, or its findings as tuples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner, Result

from otel_kit.cli import check

DATA = Path(__file__).resolve().parent / "data" / "expositions"  # crafted ones, one per rule


def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    check.register(app)
    return app


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli(), ["check", *args], input=stdin, env={"COLUMNS": "200"})


def findings(*args: str, stdin: str | None = None) -> list[tuple[Any, ...]]:
    result = run(*args, "--json", stdin=stdin)
    assert result.exit_code in (0, 1), result.output
    return [
        (f["severity"], f["rule"], f["family"], f["label"], f["example"], f["message"])
        for f in json.loads(result.output)["findings"]
    ]
