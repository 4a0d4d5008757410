"""The public API: small, sorted, and importable lazily."""

from __future__ import annotations

import subprocess
import sys

import otel_kit


def test_all_is_sorted_and_resolves() -> None:
    assert otel_kit.__all__ == sorted(otel_kit.__all__)
    for name in otel_kit.__all__:
        assert getattr(otel_kit, name) is not None


def test_import_does_not_load_the_sdk() -> None:
    code = "import sys, otel_kit; print('opentelemetry.sdk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
