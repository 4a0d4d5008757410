"""SIGTERM's default action, after the final snapshot: only where otel-kit runs the process.

SIGTERM's default action ends a process without `atexit`, so the counts since its last
snapshot (at most 5 s) would be lost. Under `otel-kit run` (or when asked) the default action
first calls `exit()` on each registered participant, also where a server resets SIGTERM to the
default: gunicorn's UvicornWorker does, then uvicorn re-raises SIGTERM after its graceful
shutdown. That takes replacing `signal.signal` for the whole process, which an application that
set up otel-kit itself did not ask for: it calls `handle.shutdown()` from its own shutdown
instead (docs/multiprocess.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import weakref
from typing import Any, Protocol

__all__ = ["exit_on_sigterm", "forget"]

_log = logging.getLogger("otel_kit")


class Exits(Protocol):
    def exit(self) -> None: ...


_exiting: weakref.WeakSet[Exits] = weakref.WeakSet()
_set_signal_handler = signal.signal


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM's default action, after the final snapshots."""
    for owner in list(_exiting):
        try:
            owner.exit()
        except Exception:
            _log.exception("otel-kit: the final multi-process snapshot at SIGTERM failed")
    _set_signal_handler(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _signal(signalnum: Any, handler: Any) -> Any:
    """`signal.signal`, but SIGTERM's default is `_on_sigterm` while participants remain."""
    if signalnum == signal.SIGTERM and handler == signal.SIG_DFL and _exiting:
        handler = _on_sigterm
    return _set_signal_handler(signalnum, handler)


def exit_on_sigterm(owner: Exits) -> None:
    """Make SIGTERM's default action call `owner.exit()` first, for as long as `owner` lives
    and is not forgotten."""
    _exiting.add(owner)
    if signal.signal is not _signal:
        signal.signal = _signal
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)


def forget(owner: Exits) -> None:
    """`owner` has left (closed): SIGTERM no longer waits for it."""
    _exiting.discard(owner)
