"""The public API: a short list of modules, each with a declared, sorted `__all__` that
resolves, and nothing else reachable without an underscore. Importing it stays cheap.

A module is public when no part of its dotted name starts with `_`. Adding one, or a name to
one, means changing PUBLIC below: a deliberate act, reviewed like any other API change.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import otel_kit
from otel_kit.catalogue import MetricSpec

ROOT = Path(__file__).parents[2]

PUBLIC: dict[str, list[str]] = {
    "otel_kit": [
        "ConfigError",
        "MetricsHandle",
        "Settings",
        "__version__",
        "cache_metrics",
        "not_measured",
        "record_cache_lookup",
        "setup_metrics",
    ],
    "otel_kit.autoinstrument": ["PYTHONPATH", "initialize"],
    "otel_kit.cache": ["cache_metrics", "record_cache_lookup", "redis_cache"],
    "otel_kit.cli": ["main"],
    "otel_kit.config": [
        "EXPORTERS",
        "INSTRUMENTATIONS",
        "ConfigError",
        "SettingDoc",
        "SettingKeywords",
        "Settings",
        "load_settings",
        "setting_docs",
    ],
    "otel_kit.django": [],
    "otel_kit.django.apps": ["OtelKitConfig"],
    "otel_kit.generate": [],
    "otel_kit.generate.collector": ["COLLECTOR_IMAGE", "CollectorOptions", "generate"],
    "otel_kit.generate.dashboards": ["DASHBOARDS", "render", "write"],
    "otel_kit.generate.rules": [
        "BURN_WINDOWS",
        "SLO",
        "Alert",
        "BurnWindow",
        "Group",
        "Recording",
        "Thresholds",
        "generate",
        "render",
        "write",
    ],
}
# otel_kit.catalogue: its metric specs (every MetricSpec it defines) and these.
CATALOGUE_HELPERS = [
    "BODY_SIZE_BUCKETS",
    "DB_DURATION_BUCKETS",
    "DEFAULT_DURATION_BUCKETS",
    "KNOWN_HTTP_METHODS",
    "TRANSLATION_STRATEGIES",
]
CATALOGUE_HELPERS += ["MetricSpec"]
CATALOGUE_HELPERS += ["prometheus_label", "prometheus_name", "unit_suffix"]
# One module per `otel-kit` command, each with `register(app)`; check also its --json version.
COMMANDS = ["check", "collector_config", "dashboard", "rules", "run", "top"]


def public_modules() -> set[str]:
    found = {"otel_kit"}
    for module in pkgutil.walk_packages(otel_kit.__path__, "otel_kit."):
        if not any(part.startswith("_") for part in module.name.split(".")[1:]):
            found.add(module.name)
    return found


def test_the_public_modules_are_the_listed_ones() -> None:
    commands = {f"otel_kit.cli.{name}" for name in COMMANDS}
    assert public_modules() == {*PUBLIC, "otel_kit.catalogue", *commands}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_module_declares_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} declares no __all__"  # (ruff sorts it: RUF022)
    assert sorted(exported) == sorted(PUBLIC[name])
    for attribute in exported:
        assert getattr(module, attribute) is not None


def test_the_catalogue_exports_every_metric_spec_and_its_helpers() -> None:
    from otel_kit import catalogue

    specs = [name for name, value in vars(catalogue).items() if isinstance(value, MetricSpec)]
    assert specs, "no MetricSpec found in otel_kit.catalogue"
    assert set(catalogue.__all__) == {*specs, *CATALOGUE_HELPERS}


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_module_registers_its_command(name: str) -> None:
    module = importlib.import_module(f"otel_kit.cli.{name}")
    assert set(module.__all__) <= {"JSON_VERSION", "register"}
    assert callable(module.register)


def test_examples_and_docs_use_only_the_public_api() -> None:
    """What users copy from must not reach into private modules."""
    pattern = re.compile(r"\b(?:from|import)\s+(otel_kit(?:\.\w+)*)")
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.py")]
    used = {(path.name, m) for path in files for m in pattern.findall(path.read_text())}
    assert used, "no otel_kit import found in README, docs or examples"
    private = {(file, m) for file, m in used if any(p.startswith("_") for p in m.split("."))}
    assert not private
    assert {m for _, m in used} <= public_modules()


@pytest.mark.parametrize(
    "code",
    [
        "import otel_kit",
        "import otel_kit.autoinstrument",
        "import otel_kit.catalogue",
        "from otel_kit import __version__",
    ],
)
def test_import_does_not_load_the_sdk(code: str) -> None:
    """`otel-kit run` puts otel_kit on every Python process's path: processes that never set
    up metrics must not pay for the SDK."""
    check = f"{code}; import sys; print('opentelemetry.sdk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lazy_names_resolve_and_unknown_ones_raise() -> None:
    for name in otel_kit.__all__:
        assert getattr(otel_kit, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        otel_kit.nope  # noqa: B018
