"""Imported by Python at startup when `otel-kit run` put this directory on PYTHONPATH."""

try:
    from otel_kit.autoinstrument import initialize
except ImportError as exc:  # a Python without otel-kit (or its dependencies): run uninstrumented
    import sys

    sys.stderr.write(f"otel-kit: not instrumenting {sys.executable}: {exc}\n")
else:
    initialize()
