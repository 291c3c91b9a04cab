"""`make demo` (``python -m examples.chat.demo``) works from a checkout and stays fast."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_every_kind_of_call_and_exits_zero() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "examples.chat.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    out = result.stdout
    assert "generated examples/chat/v1/chat.proto" in out
    for expected in (
        "ping -> server time",  # unary
        "stream: #lobby seq 2 <alice> flare is fast",  # server stream
        "push:   MessagePosted seq 1",  # server push
        "server stored 4096 bytes",  # client stream
        "<- echo-bot: you said 'how are you?'",  # bidi
        "UNAUTHENTICATED",  # auth
        "server shut down gracefully",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert result.stderr == ""
