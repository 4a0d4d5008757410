"""The `otel-kit` command. Needs the `cli` extra (typer, rich)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    try:
        if sys.argv[1:2] == ["run"]:  # every service start: load that command only
            from otel_kit.cli.run import standalone

            app = standalone()
        else:
            from otel_kit.cli._app import app
    except ImportError as exc:
        sys.stderr.write(f"otel-kit: the CLI needs {exc.name}; pip install 'otel-kit[cli]'\n")
        raise SystemExit(2) from None
    app()
