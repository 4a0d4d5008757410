"""`otel-kit run`: start a command with otel-kit in every Python process it starts."""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from otel_kit import autoinstrument
from otel_kit.config import ConfigError, load_settings, setting_docs

__all__ = ["register"]

HELP = "\n\n".join(
    [
        "Run COMMAND with otel-kit metrics in every Python process it starts, no code change.",
        "Options go before the command (or before --). Each sets the environment variable named "
        "in its help; the command's processes read it. Metrics are served on each "
        "Starlette/FastAPI app's metrics path, or with --prometheus-port on that port; with "
        "several worker processes one scrape shows them all (docs/multiprocess.md).",
        "  otel-kit run uvicorn app:app",
        "  otel-kit run --service-name shop gunicorn -w 4 -k uvicorn.workers.UvicornWorker app:app",
    ]
)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _command() -> Any:
    """The command function, with one option per setting (new settings appear by themselves)."""
    parameters = []
    for doc in setting_docs():
        # A credential in a flag stays in the shell's history and in `ps` output.
        env = f"({'prefer the ' if doc.secret else ''}env: {', '.join(doc.env)})"
        default = f" (default: {doc.default})" if doc.default else ""
        text = f"{env} {doc.description}{default}"  # env first: on the flag's line
        option = typer.Option(_flag(doc.name), help=text, show_default=False)
        parameters.append(
            inspect.Parameter(
                doc.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[str | None, option],
            )
        )
    argument = typer.Argument(help="The command and its arguments.", show_default=False)
    parameters.append(
        inspect.Parameter(
            "command",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[list[str] | None, argument],
        )
    )

    def run(**values: Any) -> None:
        _run(values.pop("command") or [], values)

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run


def register(app: typer.Typer) -> None:
    """Add `run` to the `otel-kit` command."""
    app.command(
        name="run",
        help=HELP,
        # Options end at the command: `otel-kit run --service-name a uvicorn app:app --port 1`.
        context_settings={"allow_interspersed_args": False},
    )(_command())


def _fail(message: str) -> NoReturn:
    typer.echo(f"otel-kit run: {message}", err=True)
    raise typer.Exit(2)


def _name_flags(message: str, given: dict[str, str]) -> str:
    """ConfigError lines start `invalid setting <field> /`: say which option gave the value."""
    lines = []
    for line in message.splitlines():
        field = next((f for f in given if line.startswith(f"invalid setting {f} ")), None)
        lines.append(line if field is None else f"{line} (from {_flag(field)})")
    return "\n".join(lines)


def _data_directory(path: str | None) -> tuple[Path, Path | None]:
    """The multi-process directory and, if this run created it, that same path."""
    from otel_kit._exporters import multiprocess  # POSIX only: imported when needed

    if path is None:
        try:
            created = Path(tempfile.mkdtemp(prefix="otel-kit-"))
        except OSError as exc:
            raise ConfigError(
                f"cannot create the multi-process data directory in {tempfile.gettempdir()} "
                f"({exc.strerror}); give one with --multiproc-dir (OTEL_KIT_MULTIPROC_DIR)"
            ) from None
        (created / multiprocess.OWNED_MARKER).touch()
        try:
            return multiprocess.check_directory(str(created)), created
        except ConfigError:
            shutil.rmtree(created)
            raise
    directory = multiprocess.check_directory(path)
    live = multiprocess.live_processes(directory)
    if live:
        raise ConfigError(
            f"invalid setting multiproc_dir / OTEL_KIT_MULTIPROC_DIR = {path!r}: {len(live)} "
            "running process(es) use it; give each running service its own directory"
        )
    multiprocess.reset(directory)  # what an earlier run left would be added to this one's
    return directory, None


def _run(command: list[str], values: dict[str, Any]) -> NoReturn:
    if not command:
        _fail("missing the command to run, e.g. otel-kit run uvicorn app:app")
    given: dict[str, str] = {field: value for field, value in values.items() if value is not None}
    try:
        settings = load_settings(given)
    except ConfigError as exc:
        _fail(_name_flags(str(exc), given))
    env = dict(os.environ)
    kit_names = {doc.name: doc.env[0] for doc in setting_docs()}  # OTEL_KIT_<NAME>
    for field, value in given.items():
        env[kit_names[field]] = value
    here = str(autoinstrument.PYTHONPATH)
    python_path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    env["PYTHONPATH"] = os.pathsep.join([here, *python_path])
    # The process exec'd below keeps this PID: it sets up first, and owns the directory.
    env["OTEL_KIT_RUN_PID"] = str(os.getpid())
    created = None
    if "prometheus" in settings.metrics_exporter:
        try:
            directory, created = _data_directory(settings.multiproc_dir)
        except ConfigError as exc:
            _fail(str(exc))
        env["OTEL_KIT_MULTIPROC_DIR"] = str(directory)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        typer.echo(f"otel-kit run: cannot run {command[0]!r}: {exc.strerror}", err=True)
        raise typer.Exit(127 if isinstance(exc, FileNotFoundError) else 126) from None
