"""`otel-kit run ...` for the tests: the real `otel-kit` command, with `run` registered here
until otel_kit/cli/_app.py registers it itself.

    python tests/integration/run_cli.py run [options] command...
"""

from otel_kit.cli import _app, run

if not any(command.name == "run" for command in _app.app.registered_commands):
    run.register(_app.app)
_app.app()
