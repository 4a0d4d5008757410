"""The settings table of README.md, generated from `otel_kit.config.setting_docs()`.

`python -m otel_kit.generate._readme` rewrites the table between the marker comments; a test
fails while the README's table differs from this one.
"""

from __future__ import annotations

from pathlib import Path

from otel_kit.config import setting_docs

__all__ = ["BEGIN", "END", "README", "settings_table", "with_settings_table"]

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"
README = Path(__file__).parents[2] / "README.md"  # in a source checkout


def settings_table() -> str:
    rows = [
        "| keyword argument | environment variables | default | what it does, allowed values |",
        "|---|---|---|---|",
    ]
    for doc in setting_docs():
        env = ", ".join(f"`{name}`" for name in doc.env)
        default = f"`{doc.default}`" if doc.default else "unset"
        description = doc.description.replace("|", "\\|")
        rows.append(f"| `{doc.name}` | {env} | {default} | {description} |")
    return "\n".join(rows)


def with_settings_table(readme: str) -> str:
    """`readme` with the current table between the markers."""
    before, begin, rest = readme.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"no {BEGIN} ... {END} in the README")
    return f"{before}{BEGIN}\n{settings_table()}\n{END}{after}"


if __name__ == "__main__":
    README.write_text(with_settings_table(README.read_text()))
