"""`flare call` turns bad command-line input into exit status 2 and one stderr line.

Each case fails before connecting, so the URL points at a closed port.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flare_runtime.cli import main

ROOT = Path(__file__).resolve().parents[3]
PING = "/examples.chat.v1.ChatService/Ping"


@pytest.mark.parametrize(
    ("request_json", "headers", "expected"),
    [
        ("[]", [], "bad request JSON: /examples.chat.v1.ChatService/Ping takes one request"),
        ("5", [], "bad request JSON"),
        ("[5]", [], "bad request JSON"),
        ("{}", ["-H", "bad key:v"], "bad header: invalid metadata key 'bad key'"),
        ("{}", ["-H", "x-bin:text"], "bad header: metadata key 'x-bin' ends in -bin"),
        ("{}", ["-H", "novalue"], "is not KEY:VALUE"),
    ],
)
def test_bad_request_or_header_exits_2_without_a_traceback(
    request_json: str, headers: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["call", "ws://127.0.0.1:1", PING, request_json, *headers]
    status = main([*argv, "--generated", str(ROOT / "generated")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("flare call: ")
    assert expected in err
    assert "Traceback" not in err
    assert sys.exc_info() == (None, None, None)
