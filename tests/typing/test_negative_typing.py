"""mypy must reject misuse of generated code: exactly the errors marked in negative/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEGATIVE = Path(__file__).resolve().parent / "negative"
MARKER = "# E:"
CODE = re.compile(r"\[([a-z-]+)\]")
REPORTED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


def _expected(path: Path) -> set[tuple[int, str]]:
    expected: set[tuple[int, str]] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        _, marker, codes = line.partition(MARKER)
        if marker:
            expected.update((number, code) for code in CODE.findall(codes))
    return expected


@pytest.mark.parametrize("path", sorted(NEGATIVE.glob("*.py")), ids=lambda path: path.name)
def test_mypy_reports_exactly_the_marked_errors(path: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--show-error-codes",
            "--no-pretty",
            str(path.relative_to(ROOT)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    reported: set[tuple[int, str]] = set()
    for line in result.stdout.splitlines():
        match = REPORTED.match(line)
        if match and Path(match["file"]).name == path.name:
            reported.add((int(match["line"]), match["code"]))
    expected = _expected(path)
    assert expected, "a negative typing file must mark the errors it expects"
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported == expected, result.stdout
