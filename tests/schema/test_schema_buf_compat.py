"""Agreement with ``buf breaking`` on buf's own 56 test cases (../shared/compat).

Runs the shared `compare.py` with ``--level exact``: same rule id, file and
line for every finding, case by case. The issue's bar is 54 of 56; today all
56 agree, so the test holds that line.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPAT = REPO.parent / "shared" / "compat"
REQUIRED = 56


def test_flare_agrees_with_buf_on_its_breaking_cases() -> None:
    compare = COMPAT / "compare.py"
    if not compare.is_file():
        pytest.skip(
            f"SKIPPED LOUDLY: {compare} not found; the buf agreement check needs a checkout "
            "with ../shared/compat beside the repository"
        )
    command = (
        f"{shlex.quote(sys.executable)} -m flare_runtime.cli schema check {{current}} "
        "--against {previous} --format json"
    )
    proc = subprocess.run(
        [sys.executable, str(compare), "--cmd", command, "--level", "exact", "-v", "-j", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    match = re.search(r"agree (\d+) / (\d+) cases", proc.stdout)
    assert match, proc.stdout + proc.stderr
    agreed, total = int(match.group(1)), int(match.group(2))
    assert total == 56
    assert agreed >= REQUIRED, proc.stdout
