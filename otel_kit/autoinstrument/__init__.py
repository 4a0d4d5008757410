"""`otel-kit run` inside each Python process: set up metrics, measure every Starlette app.

Called by `pythonpath/sitecustomize.py` beside this file, after it ran the `sitecustomize` it
shadows (itself, so that happens even where otel-kit cannot load); never raises (a failure is
logged and the application runs without otel-kit metrics). Imports only the standard library
until needed.

- The command's own process (`OTEL_KIT_RUN_PID`) sets up at once: it may serve the metrics
  port, and a forking server (gunicorn) passes the setup on to its workers.
- Other Python processes (spawned workers, reloaders) set up when they first import a library
  otel-kit serves or measures; helper processes that import none of them (multiprocessing's
  resource tracker, small tools) do not pay for otel-kit.
- Every Starlette application (FastAPI included) gets otel-kit's middleware when its middleware
  stack is built, however it was created (module attribute, factory, `--reload`), unless it
  called `setup_metrics(app)` itself.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from otel_kit._instrumentation import INTEGRATIONS  # standard library only, like this module

__all__ = ["PYTHONPATH", "initialize"]

# The directory `otel-kit run` puts first on PYTHONPATH: its only module is `sitecustomize`.
PYTHONPATH = Path(__file__).parent / "pythonpath"

_log = logging.getLogger("otel_kit")

_STARLETTE = "starlette.applications"  # patched when imported (below)
# Importing one of these means the process serves or measures something: set up then.
_TRIGGERS = frozenset(
    {_STARLETTE, "uvicorn", "gunicorn", *(name for i in INTEGRATIONS for name in i.triggers)}
)
_failed = False


def initialize() -> None:
    """Bootstrap otel-kit in this process (the `sitecustomize` it shadows ran already)."""
    try:
        if os.environ.get("OTEL_KIT_RUN_PID") == str(os.getpid()):
            _activate()
        sys.meta_path.insert(0, _PostImportHook())
        if _STARLETTE in sys.modules:
            _patch_starlette(sys.modules[_STARLETTE])
    except Exception:
        _log.exception("otel-kit: bootstrap failed; the application runs without its metrics")


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


class _PostImportHook:
    """A meta path finder that runs `_imported()` right after a watched module is executed."""

    def __init__(self) -> None:
        self._finding: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _TRIGGERS or fullname in self._finding:
            return None
        self._finding.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            _imported(fullname, module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _imported(name: str, module: ModuleType) -> None:
    try:
        _activate()
        if name == _STARLETTE:
            _patch_starlette(module)
    except Exception:
        _log.exception("otel-kit: instrumenting %s failed", name)


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
