"""The post-import hook: a function called right after a watched module is executed. Used by
`setup_metrics()` (instrument an integration when the application imports its library) and by
`otel-kit run` (set up, patch Starlette and Flask, instrument). Standard library only, like the
registry: `otel_kit.autoinstrument` imports it in every process `otel-kit run` starts."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable, Sequence
from types import ModuleType

__all__ = ["PostImportHook"]


class PostImportHook:
    """A meta path finder that calls `on_import(name, module)` right after a module named in
    `names` is executed (the module is still `_initializing`: `_setup._imported`). It finds
    nothing itself: it wraps the loader the finders after it return."""

    def __init__(self, names: frozenset[str], on_import: Callable[[str, ModuleType], None]) -> None:
        self._names = names
        self._on_import = on_import
        self._finding: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._names or fullname in self._finding:
            return None
        self._finding.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module
        on_import = self._on_import

        def exec_module(module: ModuleType) -> None:
            execute(module)
            on_import(fullname, module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
