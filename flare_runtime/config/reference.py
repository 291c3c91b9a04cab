"""docs/operations.md's configuration reference, generated from the schema.

``python -m flare_runtime.config.reference docs/operations.md`` rewrites the
part of the page between `BEGIN` and `END` (and ``--check`` only compares,
exiting 1 when the page is stale; tests/runtime/config/test_reference.py
runs it). Each table of `flare_runtime.config.schema` becomes a section, each
key a row: its name, type, default, environment variable, flag and doc.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flare_runtime.config.load import toml_value, type_name
from flare_runtime.config.schema import Key, keys, tables

BEGIN = "<!-- BEGIN GENERATED CONFIG REFERENCE (python -m flare_runtime.config.reference) -->"
END = "<!-- END GENERATED CONFIG REFERENCE -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(key: Key) -> str:
    value: Any = key.default
    if value is None:
        return "unset"
    if key.path == "serve.workers" or not isinstance(value, (dict, list)) or value:
        return f"`{toml_value(value)}`"
    return "empty"


def reference() -> str:
    """The generated Markdown (without the markers)."""
    by_table: dict[str, list[Key]] = {}
    for key in keys():
        by_table.setdefault(key.table, []).append(key)
    lines: list[str] = []
    for table in tables():
        entries = by_table.get(table.path, [])
        if not entries:
            continue
        lines += ["", f"### `[{table.path}]`" if table.path else "### Top level", ""]
        summary = table.doc.split("\n\n", 1)[0]
        if summary:
            lines += [_cell(summary), ""]
        lines += [
            "| Key | Type | Default | Environment | Flag | Meaning |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for key in entries:
            secret = " Secret: masked by `--print-config`, never logged." if key.secret else ""
            lines.append(
                f"| `{key.name}` | {_cell(type_name(key.type))} | {_cell(_default(key))} "
                f"| `{key.env}` | {f'`{key.flag}`' if key.flag else ''} "
                f"| {_cell(key.doc)}{secret} |"
            )
    return "\n".join(lines).strip("\n") + "\n"


def render(page: str) -> str:
    """`page` with the text between `BEGIN` and `END` replaced by `reference`."""
    start = page.index(BEGIN) + len(BEGIN)
    end = page.index(END)
    return page[:start] + "\n\n" + reference() + "\n" + page[end:]


def main(argv: list[str]) -> int:
    """Rewrite (or with ``--check`` compare) the page named by `argv`."""
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    if len(paths) != 1:
        print("usage: python -m flare_runtime.config.reference [--check] PAGE", file=sys.stderr)
        return 2
    path = Path(paths[0])
    page = path.read_text(encoding="utf-8")
    fresh = render(page)
    if check:
        if fresh != page:
            print(f"{path} is stale: run python -m flare_runtime.config.reference {path}")
            return 1
        return 0
    path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
