"""`flare serve` and `flare call` as a user runs them: separate processes, real sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FLARE = [sys.executable, "-m", "flare_runtime.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    return env


def test_serve_then_call_unary_stream_and_errors() -> None:
    port = _free_port()
    server = subprocess.Popen(
        [*FLARE, "serve", "examples.chat.service:server", "--ws", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"serving websocket on port {port}" in line
        url = f"ws://127.0.0.1:{port}"

        def call(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*FLARE, "call", url, *args],
                check=False,
                cwd=ROOT,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )

        ping = call("/examples.chat.v1.ChatService/Ping", "{}")
        assert ping.returncode == 0, ping.stderr
        assert json.loads(ping.stdout).endswith("Z")  # a Timestamp in JSON

        denied = call("/examples.chat.v1.ChatService/Send", '{"message": {"room": "a"}}')
        assert denied.returncode == 1
        assert denied.stderr.startswith("UNAUTHENTICATED:")

        missing = call("/examples.chat.v1.ChatService/Nope", "{}")
        assert missing.returncode == 2

        bad_json = call("/examples.chat.v1.ChatService/Ping", "{not json")
        assert bad_json.returncode == 2
        assert "bad request JSON" in bad_json.stderr
    finally:
        server.terminate()
        started = time.monotonic()
        assert server.wait(timeout=30) == 0
        assert time.monotonic() - started < 30


def test_serve_rejects_a_bad_target() -> None:
    result = subprocess.run(
        [*FLARE, "serve", "examples.chat.service:nothing", "--ws", "127.0.0.1:0"],
        check=False,
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no attribute" in result.stderr
