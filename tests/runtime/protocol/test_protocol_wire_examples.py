"""The hex examples of docs/wire-format.md §10 are what the implementation sends and accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flare_runtime.protocol import (
    CLIENT,
    SERVER,
    CallEnded,
    CallStarted,
    Connection,
    ProtocolConfig,
)
from flare_runtime.protocol.config import Settings
from flare_runtime.protocol.frames import (
    encode_cancel,
    encode_close,
    encode_end_call,
    encode_goaway,
    encode_half_close,
    encode_ping,
    encode_pong,
    encode_push,
    encode_window_update,
)
from flare_runtime.status import StatusCode

DOC = Path(__file__).resolve().parents[3] / "docs" / "wire-format.md"
QUIET = ProtocolConfig(keepalive_interval=None)
NOT_COMPACT = ProtocolConfig(keepalive_interval=None, settings=Settings(compact_calls=False))


def doc_lines() -> list[str]:
    """Every line of the doc with the header/payload separator and extra spaces removed."""
    return [" ".join(line.replace("│", " ").split()) for line in DOC.read_text().splitlines()]


@pytest.mark.parametrize(
    ("label", "frame"),
    [
        ("HALF_CLOSE call 4", encode_half_close(4)),
        ("CANCEL call 3, CANCELLED", encode_cancel(3, 1)),
        ("WINDOW_UPDATE call 4 +128K", encode_window_update(4, 131072)),
        ("PUSH type 0x00030001", encode_push(0x00030001, b"\x08\x01")),
        ("PING", encode_ping(bytes(7) + b"\x01")),
        ("PONG", encode_pong(bytes(7) + b"\x01")),
        ('GOAWAY last 7 "deploy"', encode_goaway(7, "deploy")),
        ('CLOSE 5 "need 1"', encode_close(5, "need 1")),
    ],
)
def test_the_other_frames_table_matches_the_encoders(label: str, frame: bytes) -> None:
    assert f"{label} {frame.hex(' ')}" in doc_lines()


def test_the_handshake_and_unary_call_examples_are_byte_exact() -> None:
    text = DOC.read_text()
    client = Connection(CLIENT, QUIET)
    hello = client.data_to_send()
    # The HELLO example: header and magic on one line, then one setting per line.
    hello_hex = hello.hex(" ")
    assert hello_hex.startswith("00 00 00 2d 01 00 00 00 00 00 46 4c 41 52 45 00 01 00 01")
    settings = re.findall(r"^ +((?:[0-9a-f]{2} ){5}[0-9a-f]{2})   setting", text, re.M)
    assert len(settings) == 6
    assert hello_hex.endswith(" ".join(settings))
    # The two-frame example: the server did not announce COMPACT_CALLS.
    server = Connection(SERVER, NOT_COMPACT)
    server.receive_data(hello, 0.0)
    client.receive_data(server.data_to_send(), 0.0)
    call_id = _start_example_call(client)
    request = client.data_to_send()
    assert request == bytes.fromhex(
        "00 00 00 26 02 00 00 00 00 01 00 01 00 02 00 00 00 00 00 16 e3 60 01"
        " 0d"
        + b"authorization".hex()
        + " 0a"
        + b"Bearer abc".hex()
        + " 00 00 00 04 04 01 00 00 00 01 0a 02 68 69"
    )
    server.receive_data(request, 0.0)
    server.send_headers(call_id, [("x-server", "a")])
    server.send_message(call_id, bytes.fromhex("0a 02 6f 6b"))
    server.end_call(call_id)
    assert server.data_to_send() == bytes.fromhex(
        "00 00 00 0c 03 00 00 00 00 01 01 08" + b"x-server".hex() + "01 61"
        " 00 00 00 04 04 00 00 00 00 01 0a 02 6f 6b"
        " 00 00 00 04 06 00 00 00 00 01 00 00 00 00"
    )


def _start_example_call(client: Connection) -> int:
    """The unary call of both examples in §10: route 1.2, a token, 1.5 s, request "hi"."""
    return client.start_call(
        0x00010002,
        [("authorization", "Bearer abc")],
        timeout=1.5,
        now=0.0,
        message=bytes.fromhex("0a 02 68 69"),
        end_stream=True,
    )


def test_the_compact_unary_call_example_is_byte_exact() -> None:
    client = Connection(CLIENT, QUIET)
    server = Connection(SERVER, QUIET)
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send(), 0.0)
    call_id = _start_example_call(client)
    request = client.data_to_send()
    assert request == bytes.fromhex(
        "00 00 00 2a 02 01 00 00 00 01 00 01 00 02 00 00 00 00 00 16 e3 60 01"
        " 0d" + b"authorization".hex() + " 0a" + b"Bearer abc".hex() + " 0a 02 68 69"
    )
    server.receive_data(request, 0.0)
    started = server.events_received()[-1]
    assert isinstance(started, CallStarted)
    assert started.metadata == (("authorization", "Bearer abc"),)
    assert started.message == bytes.fromhex("0a 02 68 69")
    server.send_headers(call_id, [("x-server", "a")])
    server.send_final_message(call_id, bytes.fromhex("0a 02 6f 6b"))
    response = server.data_to_send()
    assert response == bytes.fromhex(
        "00 00 00 0c 03 00 00 00 00 01 01 08" + b"x-server".hex() + "01 61"
        " 00 00 00 04 04 02 00 00 00 01 0a 02 6f 6b"
    )
    client.receive_data(response, 0.0)
    assert client.events_received()[-1] == CallEnded(
        call_id, StatusCode.OK, final=bytes.fromhex("0a 02 6f 6b")
    )
    assert client.open_calls == 0
    assert server.open_calls == 0


def test_the_error_status_example_decodes_as_documented() -> None:
    frame = encode_end_call(2, StatusCode.NOT_FOUND, "no room", b"", [("retry-bin", b"\x01")])
    assert frame == bytes.fromhex(
        "00 00 00 17 06 00 00 00 00 02 05 07"
        + b"no room".hex()
        + "00 01 09"
        + b"retry-bin".hex()
        + "01 01"
    )
    client = Connection(CLIENT, QUIET)
    server = Connection(SERVER, QUIET)
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send(), 0.0)
    client.start_call(1)
    client.start_call(1)
    client.events_received()
    client.receive_data(frame, 0.0)
    assert client.events_received() == [
        CallEnded(2, StatusCode.NOT_FOUND, "no room", b"", (("retry-bin", b"\x01"),))
    ]
