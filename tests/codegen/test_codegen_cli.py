"""The ``flare`` entry point (flare_codegen/cli.py): dispatch and clean exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    # `flare routes schemas --json | head -1`: the reader closes the pipe
    # before flare writes; the command ends quietly instead of printing a
    # BrokenPipeError traceback (twice: once more when stdout is flushed at exit).
    proc = subprocess.Popen(
        [sys.executable, "-m", "flare_codegen.cli", "routes", str(ROOT / "schemas"), "--json"],
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
