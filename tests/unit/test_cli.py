"""The `otel-kit` command (typer's runner, in-process)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from otel_kit import __version__
from otel_kit.cli._app import app
from otel_kit.config import setting_docs


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"otel-kit {__version__}"


def test_config_shows_values_and_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if "service_name" in line)
    assert "OTEL_KIT_SERVICE_NAME" in line
    assert "'billing'" in line
    assert "OTEL_EXPORTER_PROMETHEUS_PORT" in result.output


def test_config_with_a_bad_value_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_KIT_CARDINALITY_LIMIT", "-5")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "OTEL_KIT_CARDINALITY_LIMIT = '-5': expected an integer from 1 to" in result.output


@pytest.mark.parametrize("columns", [80, 100, 200])
def test_config_never_cuts_a_name(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    """Issue 19, item 8: at 80 columns the env var names were cut with `…`."""
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= columns
    assert "…" not in result.output
    words = set(result.output.split())
    for doc in setting_docs():
        assert doc.name in words
        assert set(doc.env) <= words, doc.env
    assert "'billing'" in words
