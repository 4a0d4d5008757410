"""docs/architecture.md against the tree: every module is on the map, every path the map
names exists, and the import rules it states hold."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "otel_kit"
DOC = ROOT / "docs" / "architecture.md"


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imported(path: Path) -> set[str]:
    """The otel_kit modules `path` imports (absolute imports; the package has no others)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module != "otel_kit":  # from otel_kit import x: only otel_kit.x counts
                names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == "otel_kit"}


def test_every_module_is_on_the_map() -> None:
    text = DOC.read_text()
    missing = [
        str(p.relative_to(ROOT)) for p in modules() if f"`{p.relative_to(ROOT)}`" not in text
    ]
    assert not missing, f"add these to the module map in {DOC.relative_to(ROOT)}"


def test_every_path_the_map_names_exists() -> None:
    paths = re.findall(r"`((?:otel_kit|tests|docs|bench|collector)/[^`<>* ]+)`", DOC.read_text())
    assert len(paths) > len(modules())  # the map and the table of changes
    assert [p for p in paths if not (ROOT / p).exists()] == []


def test_no_module_is_imported_that_does_not_exist() -> None:
    """A renamed module leaves no import of its old name behind (also in lazy imports)."""
    known = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in modules()
    }
    for path in modules():
        for name in imported(path):
            assert name in known or name.rsplit(".", 1)[0] in known, f"{path}: {name}"


def test_the_runtime_never_imports_the_tools() -> None:
    runtime = [p for p in modules() if p.parent.name not in ("cli", "generate")]
    for path in runtime:
        tools = {n for n in imported(path) if n.startswith(("otel_kit.cli", "otel_kit.generate"))}
        assert not tools, f"{path.relative_to(ROOT)} imports {tools}"


def test_generators_read_only_the_catalogue_and_the_settings() -> None:
    allowed = ("otel_kit.generate", "otel_kit.catalogue", "otel_kit.config", "otel_kit.__version__")
    for path in (PACKAGE / "generate").glob("*.py"):
        other = {n for n in imported(path) if not n.startswith(allowed)}
        assert not other, f"{path.relative_to(ROOT)} imports {other}"


def test_the_integration_registry_is_standard_library_only() -> None:
    """`otel-kit run` reads the registry in every Python process before anything is set up:
    it must not load the SDK or any library it names."""
    registry = PACKAGE / "_instrumentation" / "__init__.py"
    tree = ast.parse(registry.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names, f"{registry} imports nothing: is it still the registry?"
    allowed = {*sys.stdlib_module_names, "__future__"}
    assert [name for name in names if name.split(".")[0] not in allowed] == []
