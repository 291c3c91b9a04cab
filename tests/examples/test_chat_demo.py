"""`make demo` (``python -m examples.chat.demo``) works from a checkout and stays fast.

The demo serves WebSocket, QUIC and gRPC from one server and runs one client
session over each; these tests read its real output to check that every
transport ran every step of that session.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMES = ("ws", "quic", "grpc")


@pytest.fixture(scope="module")
def demo_output() -> str:
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
    assert result.stderr == ""
    return result.stdout


def _sessions(out: str) -> dict[str, str]:
    """Each transport's session section of the output, by URL scheme."""
    sections: dict[str, str] = {}
    for chunk in out.split("\n== the same client session over ")[1:]:
        scheme = chunk.partition("://")[0]
        sections[scheme] = chunk.split("\n\n")[0]
    return sections


def test_demo_generates_code_and_serves_three_transports_from_one_server(demo_output: str) -> None:
    out = demo_output
    assert "generated examples/chat/v1/chat.proto -> chat_flare.py, chat_pb2.py" in out
    assert re.search(r"dev certificate .* -> \S+dev-cert\.pem", out)
    assert "one chat server process, three transports:" in out
    ports = {
        scheme: re.search(rf"^  {scheme}://127\.0\.0\.1:(\d+) ", out, re.MULTILINE)
        for scheme in SCHEMES
    }
    assert all(ports.values()), out
    assert "server shut down gracefully" in out


def test_demo_runs_the_same_session_over_websocket_quic_and_grpc(demo_output: str) -> None:
    sessions = _sessions(demo_output)
    assert list(sessions) == list(SCHEMES), demo_output
    for scheme, text in sessions.items():
        for expected in (
            "unary          alice  ping -> server time",
            f"unary          bob    sent 'bob here, on {scheme}' -> seq",
            "<alice> hello bob!",  # server stream
            "<alice> flare is fast",
            "server stored 4096 bytes",  # client stream
            "sent 'how are you?' <- echo-bot: you said 'how are you?'",  # bidi
            "auth error     anon   send -> UNAUTHENTICATED:",
        ):
            assert expected in text, f"{scheme}: {expected!r} missing from:\n{text}"
        # Bob's stream resumes after his own message: exactly Alice's two, in order.
        streamed = re.findall(r"server stream  bob    #lobby seq (\d+) <alice> (.*)", text)
        assert [line for _, line in streamed] == ["hello bob!", "flare is fast"], text
        first, second = (int(seq) for seq, _ in streamed)
        assert second == first + 1


def test_demo_shows_push_where_the_transport_has_it_and_says_grpc_has_none(
    demo_output: str,
) -> None:
    sessions = _sessions(demo_output)
    for scheme in ("ws", "quic"):
        pushed = re.findall(r"server push    bob    MessagePosted seq \d+ '(.*)'", sessions[scheme])
        assert pushed == ["hello bob!", "flare is fast"], sessions[scheme]
    assert "MessagePosted" not in sessions["grpc"].split("server push")[1]
    assert "gRPC has no push outside a call" in sessions["grpc"]


def test_demo_table_compares_the_three_sessions(demo_output: str) -> None:
    rows = {
        "unary": "Ping + 3 Sends ok",
        "server stream": "2 messages, in order",
        "client stream": "4096 bytes stored",
        "bidi": "2 echoes",
        "auth error": "UNAUTHENTICATED",
    }
    table = demo_output.split("same client code, three transports:\n")[1]
    for step, text in rows.items():
        cell = re.escape(text)
        assert re.search(rf"^  {step} +{cell} +{cell} +{cell}$", table, re.MULTILINE), table
    assert re.search(r"^  server push +2 MessagePosted +2 MessagePosted +n/a on gRPC$", table, re.M)
    assert "identical on all three except: server push" in table
