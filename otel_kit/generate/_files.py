"""Writing generated files: the one way the generators and the CLI put `{name: text}` on disk."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["differing", "write_files"]


def differing(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """The files that exist in `directory` with other content: writing would overwrite them."""
    existing = ((directory / name, text) for name, text in files.items())
    return [path for path, text in existing if path.exists() and path.read_text("utf-8") != text]


def write_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write each file (UTF-8) into `directory`, made if missing; the paths, in `files`' order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
