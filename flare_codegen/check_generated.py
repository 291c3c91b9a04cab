"""``python -m flare_codegen.check_generated SCHEMAS GENERATED``: fail on drift.

Regenerates SCHEMAS into a temporary directory exactly as ``flare gen`` does
and compares it byte for byte with GENERATED. Any file that differs, is
missing, or is stale (present in GENERATED but no longer generated) is listed
and the exit status is 1; ``make check-generated`` runs this in CI. ``py.typed``
markers are packaging, not generator output: GENERATED may hold them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flare_codegen.errors import CompileError
from flare_codegen.generate import generate

_IGNORED_PARTS = frozenset({"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"})


@dataclass(frozen=True, slots=True)
class Drift:
    """How GENERATED differs from a fresh generation (paths relative to the root)."""

    changed: tuple[str, ...]
    missing: tuple[str, ...]
    """Generated now but absent from the checked-in tree."""
    stale: tuple[str, ...]
    """Checked in but no longer generated."""

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.stale)


def _files(root: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if not root.is_dir():
        return files
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.is_file() and not _IGNORED_PARTS.intersection(relative.parts):
            if path.suffix == ".pyc" or path.name == "py.typed":
                continue
            files[relative.as_posix()] = path
    return files


def compare_trees(expected: Path, actual: Path) -> Drift:
    """Compare a fresh tree `expected` with the checked-in tree `actual`."""
    fresh = _files(expected)
    checked_in = _files(actual)
    changed = sorted(
        name
        for name in fresh.keys() & checked_in.keys()
        if fresh[name].read_bytes() != checked_in[name].read_bytes()
    )
    return Drift(
        changed=tuple(changed),
        missing=tuple(sorted(fresh.keys() - checked_in.keys())),
        stale=tuple(sorted(checked_in.keys() - fresh.keys())),
    )


def check(schema_dir: Path, generated_dir: Path) -> Drift:
    """Regenerate `schema_dir` into a temporary directory and compare with `generated_dir`."""
    with tempfile.TemporaryDirectory(prefix="flare-check-") as tmp:
        generate(schema_dir, Path(tmp))
        return compare_trees(Path(tmp), generated_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when GENERATED is up to date, 1 on drift or a compile error."""
    parser = argparse.ArgumentParser(
        prog="python -m flare_codegen.check_generated",
        description="Fail when checked-in generated code differs from a fresh `flare gen`.",
    )
    parser.add_argument("schema_dir", type=Path, metavar="SCHEMAS")
    parser.add_argument("generated_dir", type=Path, metavar="GENERATED")
    args = parser.parse_args(argv)
    try:
        drift = check(args.schema_dir, args.generated_dir)
    except CompileError as error:
        print(error.message, file=sys.stderr)
        return 1
    if not drift:
        print(f"{args.generated_dir} is up to date with {args.schema_dir}")
        return 0
    print(
        f"{args.generated_dir} is out of date; run `flare gen {args.schema_dir} -o "
        f"{args.generated_dir}` (make generate):",
        file=sys.stderr,
    )
    for label, names in (
        ("changed", drift.changed),
        ("missing", drift.missing),
        ("stale", drift.stale),
    ):
        for name in names:
            print(f"  {label}: {name}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
