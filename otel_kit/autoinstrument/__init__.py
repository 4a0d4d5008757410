"""`otel-kit run` inside each Python process: set up metrics, measure every Starlette and Flask app.

Called by `pythonpath/sitecustomize.py` beside this file, after it ran the `sitecustomize` it
shadows (itself, so that happens even where otel-kit cannot load); never raises (a failure is
logged and the application runs without otel-kit metrics). Imports only the standard library
until needed.

- A process sets up when it first imports a library otel-kit serves or measures; helper
  processes and tools that import none of them (multiprocessing's resource tracker,
  `python -c ...`) do not pay for otel-kit. The command's own process (`OTEL_KIT_RUN_PID`) sets
  up at once when it serves a metrics port or pushes: that must work whatever it imports. A
  forking server (gunicorn) passes its setup on to its workers.
- An integration (SQLAlchemy, Redis, httpx) is instrumented when the application imports its
  library, never by importing it: each is 0.1-0.3 s and several MB a process may not need.
- Every Starlette application (FastAPI included) gets otel-kit's middleware when its middleware
  stack is built, however it was created (module attribute, factory, `--reload`), unless it
  called `setup_metrics(app)` itself. Every Flask app gets it when it is created, every Django
  WSGI or ASGI handler when Django is imported.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# Standard library only, like this module.
from otel_kit._instrumentation import TRIGGERS
from otel_kit._instrumentation._import_hook import PostImportHook

__all__ = ["PYTHONPATH", "initialize"]

# The directory `otel-kit run` puts first on PYTHONPATH: its only module is `sitecustomize`.
PYTHONPATH = Path(__file__).parent / "pythonpath"

_log = logging.getLogger("otel_kit")

_STARLETTE = "starlette.applications"  # patched when imported (below)
_FLASK = "flask"  # likewise
_DJANGO = "django"  # its WSGI and ASGI handlers, when the django integration is instrumented
# Importing one of these means the process serves or measures something: set up then (and
# instrument the integration it belongs to). Not the OTel metrics API: otel-kit's setup
# imports it, also from inside the import of the SDK, which a setup started there would need.
_TRIGGERS = TRIGGERS | {"uvicorn", "gunicorn"}
# Settings (otel_kit.config's names, read here without loading it) under which the command's
# own process serves or pushes, so sets up at once.
_PORT_VARIABLES = ("OTEL_KIT_PROMETHEUS_PORT", "OTEL_EXPORTER_PROMETHEUS_PORT")
_EXPORTER_VARIABLES = ("OTEL_KIT_METRICS_EXPORTER", "OTEL_METRICS_EXPORTER")
_failed = False


def initialize() -> None:
    """Bootstrap otel-kit in this process (the `sitecustomize` it shadows ran already)."""
    try:
        own = os.environ.get("OTEL_KIT_RUN_PID") == str(os.getpid())
        # A trigger the shadowed sitecustomize imported counts as one the application did.
        if (own and _serves_or_pushes()) or not _TRIGGERS.isdisjoint(sys.modules):
            _activate()
        elif own:
            atexit.register(_remove_unused_directory)
        sys.meta_path.insert(0, PostImportHook(_TRIGGERS, _imported))
        if _STARLETTE in sys.modules:
            _patch_starlette(sys.modules[_STARLETTE])
        if _FLASK in sys.modules:
            _patch_flask(sys.modules[_FLASK])
        if _DJANGO in sys.modules:
            _measure_django(_activate())
    except Exception:
        _log.exception("otel-kit: bootstrap failed; the application runs without its metrics")


def _serves_or_pushes() -> bool:
    """Whether this process serves a metrics port or pushes (as `load_settings()` would find,
    erring towards yes: then the process merely sets up as it did before it could wait)."""
    if any(os.environ.get(name, "").strip() for name in _PORT_VARIABLES):
        return True
    chosen = next((v for v in map(os.environ.get, _EXPORTER_VARIABLES) if v and v.strip()), "")
    return chosen.strip().lower() not in ("", "prometheus")


def _remove_unused_directory() -> None:
    """At exit of the command's own process if it never set up: remove the data directory the
    run created, as the setup would have (`directory.remove_created`)."""
    if os.environ.get("OTEL_KIT_RUN_PID") != str(os.getpid()):
        return  # a worker forked from it inherited this handler (gunicorn --max-requests)
    path, run_id = os.environ.get("OTEL_KIT_MULTIPROC_DIR"), os.environ.get("OTEL_KIT_RUN_ID")
    if not path or not run_id:
        return  # a directory the user gave, or no run of ours: it stays
    try:
        with os.scandir(path) as scan:
            entries = list(scan)
        if len(entries) == 1 and entries[0].is_file(follow_symlinks=False):
            # Only the run's marker (it holds the run's random id), as when no process set up:
            # remove it without loading otel-kit's settings just for that.
            fd = os.open(entries[0].path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as marker:
                if marker.read(256) == run_id.encode():
                    os.unlink(entries[0].path)
                    os.rmdir(path)
                    return
        from otel_kit._exporters.multiprocess.directory import remove_created

        remove_created(Path(path), run_id)  # other processes of the run did set up
    except FileNotFoundError:
        pass  # removed already: the process set up after all, and its exit did it
    except Exception:  # at exit: a failure must not change how the application ends
        _log.debug("otel-kit: removing %s failed", path, exc_info=True)


def _activate() -> Any:
    """The process's MetricsHandle, set up on first use. None while otel-kit is still being
    imported or set up (the import that triggered this came from inside that setup)."""
    global _failed
    if _failed:
        return None
    setup = sys.modules.get("otel_kit._setup")
    if setup is not None and not hasattr(setup, "setup_for_run"):
        return None
    try:
        from otel_kit._setup import setup_for_run

        return setup_for_run()
    except Exception:
        _failed = True
        _log.exception("otel-kit: setup failed; the application runs without its metrics")
        return None


def _imported(name: str, module: ModuleType) -> None:
    """The run's import hook: `module` (one of `_TRIGGERS`) was just executed."""
    try:
        handle = _activate()
        if name == _STARLETTE:
            _patch_starlette(module)
        elif name == _FLASK:
            _patch_flask(module)
        if handle is not None and name in TRIGGERS:
            handle.instrument_imported(name)
        if name == _DJANGO:
            _measure_django(handle)
    except Exception:
        _log.exception("otel-kit: instrumenting %s failed", name)


def _measure_django(handle: Any) -> None:
    """Every Django WSGI/ASGI handler through the run's HTTP middleware, as "otel_kit.django"
    in INSTALLED_APPS does (the route template then comes from the django integration)."""
    if handle is None or _DJANGO in handle.settings.disabled_instrumentations:
        return
    from otel_kit._instrumentation.django import measure_handlers

    measure_handlers(handle)


def _patch_starlette(module: Any) -> None:
    """Wrap `build_middleware_stack` of Starlette and of every subclass that overrides it
    (FastAPI does, without calling Starlette's), now and for classes defined later."""
    base = module.Starlette
    if "_otel_kit_patched" in base.__dict__:
        return
    base._otel_kit_patched = True
    previous = base.__dict__.get("__init_subclass__")

    def __init_subclass__(cls: Any, /, **kwargs: Any) -> None:
        if previous is not None:
            previous.__func__(cls, **kwargs)
        else:
            super(base, cls).__init_subclass__(**kwargs)
        if "build_middleware_stack" in cls.__dict__:
            _wrap_build(cls)

    pending = [base]
    while pending:
        cls = pending.pop()
        if "build_middleware_stack" in cls.__dict__:
            _wrap_build(cls)
        pending.extend(cls.__subclasses__())
    base.__init_subclass__ = classmethod(__init_subclass__)


def _wrap_build(cls: Any) -> None:
    original = cls.__dict__["build_middleware_stack"]

    @functools.wraps(original)
    def build_middleware_stack(self: Any) -> Any:
        stack = original(self)
        handle = _activate()
        if handle is None:
            return stack
        try:
            from otel_kit._setup import wrap_built_stack

            return wrap_built_stack(handle, self, stack)
        except Exception:
            _log.exception("otel-kit: instrumenting %r failed; it runs unmeasured", self)
            return stack

    cls.build_middleware_stack = build_middleware_stack


def _patch_flask(module: Any) -> None:
    """Measure every Flask app as it is created (subclasses call this `__init__` too), unless
    it calls `setup_metrics(app)` itself: that then finds it measured already."""
    base = module.Flask
    if "_otel_kit_patched" in base.__dict__:
        return
    base._otel_kit_patched = True
    original = base.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        handle = _activate()
        if handle is None:
            return
        try:
            handle.instrument_app(self)
        except Exception:
            _log.exception("otel-kit: instrumenting %r failed; it runs unmeasured", self)

    base.__init__ = __init__
