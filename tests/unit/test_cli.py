"""The `otel-kit` command (typer's runner, in-process)."""

from __future__ import annotations

import subprocess
import sys

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


def test_run_loads_its_command_only() -> None:
    """`otel-kit run` starts every service: it loads none of the other commands (check, top and
    the generators, with httpx), which took it from 1.2-1.9 s to 0.4-0.8 s on a busy machine."""
    code = (
        "import sys\n"
        "sys.argv = ['otel-kit', 'run', '--help']\n"
        "from otel_kit.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('otel_kit.cli.') or m == 'httpx'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "['otel_kit.cli.run']", done.stderr
