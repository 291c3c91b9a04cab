"""A client written only from docs/wire-format.md talks to Flare's server `Connection`.

`DocClient` deliberately shares no code with `flare_runtime.protocol`: it
uses `struct` and the byte layouts of the document, as an implementer in
another language would. If the document and the implementation drift apart,
this test fails.
"""

from __future__ import annotations

import struct

from flare_runtime.protocol import (
    SERVER,
    CallStarted,
    Connection,
    MessageReceived,
    ProtocolConfig,
    StreamEnded,
)
from flare_runtime.protocol.frames import PreparedPush
from flare_runtime.status import StatusCode

HEADER = struct.Struct(">IBBI")  # §2: length, type, flags, call_id


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def metadata_block(pairs: list[tuple[str, bytes]]) -> bytes:  # §5.2
    out = varint(len(pairs))
    for key, value in pairs:
        out += varint(len(key)) + key.encode() + varint(len(value)) + value
    return out


def read_metadata(data: bytes, pos: int) -> list[tuple[str, bytes]]:
    count, pos = read_varint(data, pos)
    pairs = []
    for _ in range(count):
        length, pos = read_varint(data, pos)
        key = data[pos : pos + length].decode()
        pos += length
        length, pos = read_varint(data, pos)
        pairs.append((key, data[pos : pos + length]))
        pos += length
    return pairs


class DocClient:
    def __init__(self) -> None:
        self.out = bytearray()
        self.inbox = bytearray()
        self.server_settings: dict[int, int] = {}
        self.credit: dict[int, int] = {}
        self.responses: dict[int, list[bytes]] = {}
        self.ended: dict[int, tuple[int, str, bytes, list[tuple[str, bytes]]]] = {}
        self.headers: dict[int, list[tuple[str, bytes]]] = {}
        self.pongs: list[bytes] = []
        self.pushes: list[tuple[int, bytes]] = []
        self.next_id = 1
        # §4: HELLO, magic, min and max version 1, our settings (window 128 KiB).
        payload = b"FLARE" + struct.pack(">HH", 1, 1) + struct.pack(">HI", 4, 131072)
        self.frame(0x01, 0, 0, payload)

    def frame(self, frame_type: int, flags: int, call_id: int, payload: bytes) -> None:
        self.out += HEADER.pack(len(payload), frame_type, flags, call_id) + payload

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data

    def start(self, route: int, timeout_us: int, metadata: list[tuple[str, bytes]]) -> int:
        call_id, self.next_id = self.next_id, self.next_id + 1
        self.credit[call_id] = 65536  # §6: assumed until the server's HELLO
        self.frame(
            0x02, 0, call_id, struct.pack(">IQ", route, timeout_us) + metadata_block(metadata)
        )
        return call_id

    def send(self, call_id: int, message: bytes, last: bool = False) -> None:
        assert self.credit[call_id] > 0
        self.credit[call_id] -= len(message)
        self.frame(0x04, 0x01 if last else 0, call_id, message)

    def feed(self, data: bytes) -> None:
        self.inbox += data
        while len(self.inbox) >= 10:
            length, frame_type, _flags, call_id = HEADER.unpack_from(self.inbox)
            if len(self.inbox) < 10 + length:
                return
            payload = bytes(self.inbox[10 : 10 + length])
            del self.inbox[: 10 + length]
            self.handle(frame_type, call_id, payload)

    def handle(self, frame_type: int, call_id: int, payload: bytes) -> None:
        if frame_type == 0x01:  # HELLO
            assert payload[:5] == b"FLARE"
            assert struct.unpack(">HH", payload[5:9]) == (1, 1)
            for offset in range(9, len(payload), 6):
                setting_id, value = struct.unpack(">HI", payload[offset : offset + 6])
                self.server_settings[setting_id] = value
            for known in self.credit:
                self.credit[known] += self.server_settings[4] - 65536
        elif frame_type == 0x03:  # HEADERS
            self.headers[call_id] = read_metadata(payload, 0)
        elif frame_type == 0x04:  # MESSAGE
            self.responses.setdefault(call_id, []).append(payload)
        elif frame_type == 0x06:  # END_CALL
            status = payload[0]
            length, pos = read_varint(payload, 1)
            message = payload[pos : pos + length].decode()
            length, pos = read_varint(payload, pos + length)
            details = payload[pos : pos + length]
            self.ended[call_id] = (status, message, details, read_metadata(payload, pos + length))
        elif frame_type == 0x08:  # WINDOW_UPDATE
            self.credit[call_id] += struct.unpack(">I", payload)[0]
        elif frame_type == 0x09:  # PUSH
            self.pushes.append((call_id, payload))
        elif frame_type == 0x0A:  # PING -> PONG with the same 8 bytes
            self.frame(0x0B, 0, 0, payload)
        elif frame_type == 0x0B:
            self.pongs.append(payload)
        else:
            raise AssertionError(f"unexpected frame type {frame_type}")


def test_a_client_built_from_the_document_alone_interoperates() -> None:
    server = Connection(SERVER, ProtocolConfig(keepalive_interval=None))
    client = DocClient()
    unary = client.start(0x0001_0002, 1_500_000, [("authorization", b"Bearer t")])
    client.send(unary, b"\x0a\x02hi", last=True)
    stream = client.start(0x0001_0003, 0, [])
    for index in range(3):
        client.send(stream, bytes([index]))
    client.frame(0x05, 0, stream, b"")  # HALF_CLOSE
    client.frame(0x0A, 0, 0, b"12345678")  # PING
    server.receive_data(client.take(), 0.0)
    events = server.events_received()
    started = [event for event in events if isinstance(event, CallStarted)]
    assert [(event.call_id, event.wire_id) for event in started] == [
        (unary, 0x0001_0002),
        (stream, 0x0001_0003),
    ]
    assert started[0].metadata == (("authorization", "Bearer t"),)
    assert started[0].timeout == 1.5
    assert MessageReceived(unary, b"\x0a\x02hi", end_stream=True) in events
    assert StreamEnded(stream) in events
    assert server.peer_settings.initial_window_size == 131072

    server.send_headers(unary, [("x-server", "a"), ("trace-bin", b"\x00\x01")])
    server.send_message(unary, b"\x0a\x02ok")
    server.end_call(unary)
    for index in range(3):
        server.send_message(stream, b"r" * index)
    server.end_call(stream, StatusCode.NOT_FOUND, "no room", b"\x08\x05", [("retry-bin", b"\x01")])
    server.send_push(PreparedPush(0x0003_0001, b"\x08\x01"))
    client.feed(server.data_to_send())

    assert client.server_settings[3] == 1000  # MAX_CONCURRENT_CALLS default
    assert client.headers[unary] == [("x-server", b"a"), ("trace-bin", b"\x00\x01")]
    assert client.responses[unary] == [b"\x0a\x02ok"]
    assert client.ended[unary] == (0, "", b"", [])
    assert client.responses[stream] == [b"", b"r", b"rr"]
    assert client.ended[stream] == (5, "no room", b"\x08\x05", [("retry-bin", b"\x01")])
    assert client.pushes == [(0x0003_0001, b"\x08\x01")]
    assert client.pongs == [b"12345678"]
    # §6: the pipelined calls' credit was corrected by the server's window.
    assert client.credit[stream] == server.settings.initial_window_size - 3
