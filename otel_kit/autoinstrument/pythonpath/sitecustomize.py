"""Imported by Python at startup when `otel-kit run` put this directory on PYTHONPATH.

Every Python started under `otel-kit run` imports this, also one without otel-kit (another
interpreter, even a Python 2, on the same PYTHONPATH). So this module is written for any
Python and uses the standard library only: it first runs the `sitecustomize` it shadows (a
distribution's, a virtualenv's, the application's), then sets otel-kit up where otel-kit can
be imported, and elsewhere does nothing, silently.
"""

import os
import sys

# Type comments, no f-strings, no walrus: an old Python must be able to parse this file.


def _run_shadowed():  # type: () -> None
    """Run the `sitecustomize` Python would have imported without otel-kit: the first one on
    sys.path in no otel-kit bootstrap directory (this one, or another install's in a nested
    `otel-kit run`, whose bootstrap would run this one again and again)."""
    here = os.path.dirname(os.path.realpath(__file__))
    bootstrap = os.path.join("otel_kit", "autoinstrument", "pythonpath")
    path = []
    for entry in sys.path:
        real = os.path.realpath(entry or ".")
        if real != here and not real.endswith(bootstrap):
            path.append(entry)
    try:
        try:
            from importlib.machinery import PathFinder
            from importlib.util import module_from_spec
        except ImportError:  # Python 2: a sitecustomize.py is what it would have imported
            _exec_file(path)
            return
        spec = PathFinder.find_spec("sitecustomize", path)
        if spec is not None and spec.loader is not None:
            spec.loader.exec_module(module_from_spec(spec))
    except Exception as err:  # reported as site.py reports a failing sitecustomize, and go on
        if sys.flags.verbose:
            sys.excepthook(*sys.exc_info())
        else:
            message = "Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{}: {}\n"
            sys.stderr.write(message.format(type(err).__name__, err))


def _exec_file(path):  # type: (list[str]) -> None
    for entry in path:
        name = os.path.join(entry or ".", "sitecustomize.py")
        if os.path.isfile(name):
            with open(name) as source:
                code = compile(source.read(), name, "exec")
            exec(code, {"__name__": "sitecustomize", "__file__": name})
            return


def _bootstrap():  # type: () -> None
    try:
        from otel_kit.autoinstrument import initialize
    except Exception as exc:  # not installed for this Python, or it cannot load here
        # Only the command `otel-kit run` started (it keeps the PID) was meant to be measured:
        # say why it is not. Other interpreters on the same PYTHONPATH run as without otel-kit.
        if os.environ.get("OTEL_KIT_RUN_PID") == str(os.getpid()):
            message = "otel-kit: not instrumenting {}: {}\n"
            sys.stderr.write(message.format(sys.executable, exc))
        return
    initialize()


_run_shadowed()
_bootstrap()
