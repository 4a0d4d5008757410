"""Mechanisms every part of otel-kit shares: fork hooks, log-once and patch-and-undo.

Each is written once here so that integrations and exporters say only what is theirs: which
hook runs at a fork, which message is logged once, which class attribute is wrapped.
"""

from __future__ import annotations

import functools
import logging
import os
import weakref
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any, TypeVar

__all__ = ["LogOnce", "Patches", "at_fork", "report_failure", "timed"]

_log = logging.getLogger("otel_kit")

T = TypeVar("T")
Hook = Callable[[T], None]


def at_fork(
    owner: T,
    *,
    before: Hook[T] | None = None,
    after_in_parent: Hook[T] | None = None,
    after_in_child: Hook[T] | None = None,
) -> None:
    """Run `hook(owner)` around each `os.fork()` for as long as `owner` lives (held weakly).

    A hook that raises is logged, never raised into `fork()`. Does nothing where the platform
    has no fork (Windows).
    """
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(owner)

    def bind(hook: Hook[T]) -> Callable[[], None]:
        def run() -> None:
            target = ref()
            if target is None:
                return
            try:
                hook(target)
            except Exception:
                _log.exception("otel-kit: fork hook %s failed", hook.__qualname__)

        return run

    hooks = {"before": before, "after_in_parent": after_in_parent, "after_in_child": after_in_child}
    os.register_at_fork(**{when: bind(hook) for when, hook in hooks.items() if hook is not None})


class LogOnce:
    """Logs the first record of each key and drops the others: one line per kind of failure,
    not one per request or scrape. Each owner (a module, an object) keeps its own set."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(
        self, key: str, level: int, message: str, *args: object, exc_info: bool = False
    ) -> None:
        if key not in self._seen:
            self._seen.add(key)
            _log.log(level, message, *args, exc_info=exc_info)

    def warning(self, message: str, *, exc_info: bool = False) -> None:
        """`message` as a warning, once (the message is its own key)."""
        self(message, logging.WARNING, "%s", message, exc_info=exc_info)


_failures = LogOnce()


def report_failure(what: str) -> None:
    """Log, once per `what`, a failure inside otel-kit's own recording (call it from an
    `except` block). The application's request, query or call goes on unaffected."""
    _failures(
        what,
        logging.ERROR,
        "otel-kit: recording %s metrics failed; the application is unaffected",
        what,
        exc_info=True,
    )


class Patches:
    """Class attributes replaced by wrappers, undone together.

    `undo()` puts back each original whose wrapper is still in place; a wrapper that someone
    wrapped in turn since stays, so wrappers must pass calls through once `active` is False.
    """

    def __init__(self) -> None:
        self.active = True
        self._applied: list[tuple[Any, str, Any, Any]] = []

    def apply(self, targets: Iterable[tuple[Any, str, Callable[[Any], Any]]]) -> None:
        """Wrap `owner.name` with `wrap(original)` for each target. Every wrapper is built
        before any is set: a library missing one of the attributes (KeyError) gets none."""
        built = [
            (owner, name, owner.__dict__[name], wrap(owner.__dict__[name]))
            for owner, name, wrap in targets
        ]
        for owner, name, _original, wrapper in built:
            setattr(owner, name, wrapper)
        self._applied.extend(built)

    def undo(self) -> None:
        self.active = False
        for owner, name, original, wrapper in reversed(self._applied):
            if owner.__dict__.get(name) is wrapper:
                setattr(owner, name, original)
        self._applied.clear()


# timed(): `begin(*args, **kwargs)` -> what to record (None: do not measure this call), then
# `finish(state, seconds, result, exception)`; result is None when the call raised.
Begin = Callable[..., Any]
Finish = Callable[[Any, float, Any, "BaseException | None"], None]


def timed(
    original: Callable[..., Any], begin: Begin, finish: Finish, *, is_async: bool
) -> Callable[..., Any]:
    """`original` (a plain or an `async def` function) timed around each call.

    The caller says whether it is async: a function someone else wrapped may hide it. The
    call's exceptions propagate unchanged; `finish` must not raise (integrations catch and
    `report_failure` inside it).
    """
    if is_async:

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            state = begin(*args, **kwargs)
            if state is None:
                return await original(*args, **kwargs)
            start = perf_counter()
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:  # CancelledError too: the call did not complete
                finish(state, perf_counter() - start, None, exc)
                raise
            finish(state, perf_counter() - start, result, None)
            return result

        return timed_async

    @functools.wraps(original)
    def timed_sync(*args: Any, **kwargs: Any) -> Any:
        state = begin(*args, **kwargs)
        if state is None:
            return original(*args, **kwargs)
        start = perf_counter()
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            finish(state, perf_counter() - start, None, exc)
            raise
        finish(state, perf_counter() - start, result, None)
        return result

    return timed_sync
