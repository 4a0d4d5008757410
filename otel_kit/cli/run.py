"""`otel-kit run`: start a command with otel-kit in every Python process it starts."""

from __future__ import annotations

import grp
import inspect
import os
import pwd
import secrets
import tempfile
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from otel_kit import autoinstrument
from otel_kit.config import ConfigError, Settings, load_settings, setting_docs

__all__ = ["register"]  # and standalone(), for otel_kit.cli.main

HELP = "\n\n".join(
    [
        "Run COMMAND with otel-kit metrics in every Python process it starts, no code change.",
        "Options go before the command (or before --). Each sets the environment variable named "
        "in its help; the command's processes read it. Metrics are served on each "
        "Starlette/FastAPI app's metrics path, or with --prometheus-port on that port; with "
        "several worker processes one scrape shows them all (docs/multiprocess.md). A process "
        "with neither (a job worker, a migration) warns once that it serves nothing itself. "
        "Settings passed to setup_metrics() in code are ignored under run (with a warning): "
        "give them here.",
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


def standalone() -> typer.Typer:
    """`otel-kit` with its `run` command alone: what `otel-kit run ...` loads (not check, top,
    the generators and their imports), so starting a service through it costs less."""
    app = typer.Typer(add_completion=False)

    @app.callback()
    def root() -> None:
        """otel-kit: OpenTelemetry metrics inside, Prometheus outside."""

    register(app)
    return app


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


def _data_directory(path: str | None, owner: tuple[int, int] | None) -> tuple[Path, str | None]:
    """The multi-process directory and, if this run created it, the run's id (in its marker:
    only then is it removed at exit). `owner`: gunicorn's --user/--group (`_gunicorn_user`)."""
    from otel_kit._exporters.multiprocess import directory as files  # POSIX only: when needed

    uid = None if owner is None else owner[0]
    if path is None:
        try:
            created = Path(tempfile.mkdtemp(prefix="otel-kit-"))  # mode 0700
        except OSError as exc:
            raise ConfigError(
                f"cannot create the multi-process data directory in {tempfile.gettempdir()} "
                f"({exc.strerror}); give one with --multiproc-dir (OTEL_KIT_MULTIPROC_DIR)"
            ) from None
        run_id = secrets.token_hex(16)
        try:
            files.write_atomic(created / files.OWNED_MARKER, run_id.encode())
            if owner is not None:  # the workers' user must write there after gunicorn's setuid
                for name in (files.OWNED_MARKER, "."):
                    os.chown(created / name, *owner, follow_symlinks=False)
            return files.check_directory(str(created), uid), run_id
        except ConfigError:
            files.remove_created(created, run_id)
            raise
        except OSError as exc:
            files.remove_created(created, run_id)
            raise ConfigError(f"cannot prepare the data directory {created} ({exc})") from None
    directory = files.check_directory(path, uid)
    live = files.live_processes(directory)
    if live:
        raise ConfigError(
            f"invalid setting multiproc_dir / OTEL_KIT_MULTIPROC_DIR = {path!r}: {len(live)} "
            "running process(es) use it; give each running service its own directory"
        )
    files.reset(directory)  # what an earlier run left would be added to this one's
    return directory, None


def _gunicorn_user(command: list[str]) -> tuple[int, int] | None:
    """(uid, gid) that `gunicorn -u/--user U [-g/--group G]` run as root switches its workers
    to, when U is not root; None otherwise. Only the command line is read: a user set in a
    gunicorn config file (or GUNICORN_CMD_ARGS) is not seen."""
    if os.geteuid() != 0 or os.path.basename(command[0]) != "gunicorn":
        return None
    user, group = (
        _last_option(command[1:], "-u", "--user"),
        _last_option(command[1:], "-g", "--group"),
    )
    if user is None:
        return None
    try:  # as gunicorn reads them: a number or a name; the group defaults to ours
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        if group is None:
            gid = os.getegid()
        else:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        return None  # gunicorn itself refuses the unknown name
    return None if uid == 0 else (uid, gid)


def _last_option(args: list[str], short: str, long: str) -> str | None:
    """The last value of an option in `-u U`, `-uU`, `--user U` or `--user=U` form."""
    value = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in (short, long) and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(long + "="):
            value = arg.removeprefix(long + "=")
        elif arg.startswith(short) and not arg.startswith("--") and len(arg) > len(short):
            value = arg.removeprefix(short)
    return value


def _check_processes_accept(settings: Settings) -> None:
    """Raise the ConfigError each process's setup would log before running without metrics:
    the settings as they will be there, with the multi-process directory this run gives."""
    if "prometheus" in settings.metrics_exporter and settings.metrics_include_default_registry:
        from otel_kit._exporters.prometheus import default_registry

        directory = settings.multiproc_dir or tempfile.gettempdir()  # only its presence counts
        default_registry(settings.model_copy(update={"multiproc_dir": directory}))


def _run(command: list[str], values: dict[str, Any]) -> NoReturn:
    if not command:
        _fail("missing the command to run, e.g. otel-kit run uvicorn app:app")
    given: dict[str, str] = {field: value for field, value in values.items() if value is not None}
    try:
        settings = load_settings(given)
        _check_processes_accept(settings)
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
    for name in ("OTEL_KIT_RUN_ID", "OTEL_KIT_RUN_UID"):  # an enclosing run's are not ours
        env.pop(name, None)
    run_id = None
    if "prometheus" in settings.metrics_exporter:
        owner = _gunicorn_user(command)
        try:
            directory, run_id = _data_directory(settings.multiproc_dir, owner)
        except ConfigError as exc:
            _fail(str(exc))
        env["OTEL_KIT_MULTIPROC_DIR"] = str(directory)
        if run_id is not None:
            env["OTEL_KIT_RUN_ID"] = run_id  # the root process removes the directory at exit
        if owner is not None:
            env["OTEL_KIT_RUN_UID"] = str(owner[0])  # the directory's owner: directory.py
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        if run_id is not None:
            from otel_kit._exporters.multiprocess.directory import remove_created

            remove_created(directory, run_id)
        typer.echo(f"otel-kit run: cannot run {command[0]!r}: {exc.strerror}", err=True)
        raise typer.Exit(127 if isinstance(exc, FileNotFoundError) else 126) from None
