"""The ``flare`` entry point (flare_runtime/cli): the command table, lazy loading, clean exits."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flare_runtime import __version__
from flare_runtime.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[3]


def _flare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flare_runtime.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_version() -> None:
    result = _flare("--version")
    assert (result.returncode, result.stdout) == (0, f"flare {__version__}\n")


def test_help_and_serve_never_import_the_code_generator() -> None:
    probe = (
        "import sys\n"
        "from flare_runtime.cli import main\n"
        "for argv in (['--help'], ['serve', '--help'], ['call', '--help'], ['cert', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(name for name in sys.modules if name.startswith('flare_codegen')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]"


COMMAND_LINES = [
    [],
    *([name] for name in COMMANDS),
    ["cert", "dev"],
    ["schema", "check"],
    ["schema", "build"],
]


@pytest.mark.parametrize("command", COMMAND_LINES, ids=lambda argv: " ".join(argv) or "flare")
def test_help_is_plain_text(command: list[str]) -> None:
    """No reStructuredText or Markdown markup (``x``, `x`, a literal block's ``::``) in help."""
    result = _flare(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: flare" in result.stdout
    for line in result.stdout.splitlines():
        assert not re.search(r"`|::$|\*\*", line), line


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    # `flare routes schemas --json | head -1`: the reader closes the pipe
    # before flare writes; the command ends quietly instead of printing a
    # BrokenPipeError traceback (twice: once more when stdout is flushed at exit).
    proc = subprocess.Popen(
        [sys.executable, "-m", "flare_runtime.cli", "routes", str(ROOT / "schemas"), "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert err == ""
