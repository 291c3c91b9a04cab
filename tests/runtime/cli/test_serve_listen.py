"""`flare serve --listen NAME=HOST:PORT`: misuse is one line on stderr and exit status 2.

Serving a plugin's transport with it is tests/examples/test_tcp_transport.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "flare_runtime.cli", "serve", "examples.chat.service:server", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--listen", "tcp"],
            "flare serve: expected --listen NAME=HOST:PORT once per NAME, got 'tcp'",
        ),
        (
            ["--listen", "websocket=:0", "--listen", "websocket=:1"],
            "flare serve: expected --listen NAME=HOST:PORT once per NAME, got 'websocket=:1'",
        ),
        (
            ["--ws", "127.0.0.1:0", "--listen", "websocket=127.0.0.1:0"],
            "flare serve: websocket is given twice: as --ws and in --listen",
        ),
        (
            ["--listen", "tpc=127.0.0.1:0"],
            "flare serve: unknown transport 'tpc': known transports are ",
        ),
    ],
    ids=["no-address", "same-name-twice", "keyword-and-listen", "unknown-transport"],
)
def test_listen_misuse_is_one_line(args: list[str], message: str) -> None:
    result = serve(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""
