"""The hand-written WebSocket hot path agrees with websockets, and its one shim still holds.

If `test_the_shim_still_reads_websockets_parser_state` fails, a websockets
release changed the parser internals `websockets_between_frames` reads: update
the shim (flare_runtime/transports/websocket_fastpath.py) before anything else.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from flare_runtime.transports.websocket_fastpath import (
    MaskSource,
    read_binary_frames,
    websockets_between_frames,
    write_binary_frame,
)


def _open_pair() -> tuple[ServerProtocol, ClientProtocol]:
    """A websockets server and client protocol, handshake done, both OPEN."""
    server = ServerProtocol()
    client = ClientProtocol(parse_uri("ws://localhost/"))
    client.send_request(client.connect())
    server.receive_data(b"".join(client.data_to_send()))
    [request] = server.events_received()
    assert isinstance(request, Request)
    server.send_response(server.accept(request))
    client.receive_data(b"".join(server.data_to_send()))
    client.events_received()
    assert server.state is State.OPEN and client.state is State.OPEN
    return server, client


def _client_frames(client: ClientProtocol, payloads: list[bytes], *, fin: bool = True) -> bytes:
    for payload in payloads:
        client.send_frame(Frame(Opcode.BINARY, payload, fin))
    return b"".join(client.data_to_send())


def test_the_shim_still_reads_websockets_parser_state() -> None:
    server, client = _open_pair()
    try:
        assert websockets_between_frames(server)
        frame = _client_frames(client, [b"x" * 300])
        server.receive_data(frame[:5])  # a partial frame: websockets holds its bytes
        assert not websockets_between_frames(server)
        server.receive_data(frame[5:])
        assert _received(server) == [b"x" * 300]
        assert websockets_between_frames(server)
        server.receive_data(_client_frames(client, [b"first half"], fin=False))  # a fragment
        server.events_received()
        assert not websockets_between_frames(server)  # a message is being assembled
    except AttributeError as error:  # pragma: no cover -- only when websockets changed
        pytest.fail(f"websockets changed the parser state the fast path reads: {error}")


class _Reader:
    """The adapter as `read_binary_frames` sees it."""

    def __init__(self, protocol: ServerProtocol | ClientProtocol) -> None:
        self.protocol = protocol
        self.endpoint: Any = self
        self.received: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


# Sizes around each length encoding of RFC 6455 §5.2 (7-bit, 16-bit, 64-bit).
sizes = st.one_of(st.integers(0, 200), st.sampled_from([65_535, 65_536, 70_000]))
payloads = st.lists(
    sizes.map(lambda size: (bytes(range(256)) * (size // 256 + 1))[:size]), max_size=5
)


def _received(protocol: ServerProtocol | ClientProtocol) -> list[bytes]:
    received = []
    for event in protocol.events_received():
        assert isinstance(event, Frame)
        received.append(bytes(event.data))
    return received


@settings(max_examples=30, deadline=None)
@given(payloads, st.integers(0, 200))
def test_read_binary_frames_reads_what_websockets_reads(frames: list[bytes], cut: int) -> None:
    server, client = _open_pair()
    data = _client_frames(client, frames)
    reader = _Reader(server)
    rest = read_binary_frames(reader, data[: len(data) - cut], masked=True, max_size=1 << 20)
    # What is left (a partial last frame) goes through websockets, as in the adapter.
    server.receive_data(rest + data[len(data) - cut :])
    reader.received += _received(server)
    assert reader.received == frames


def test_read_binary_frames_leaves_other_frames_to_websockets() -> None:
    server, client = _open_pair()
    reader = _Reader(server)
    client.send_ping(b"p")
    ping_then_binary = b"".join(client.data_to_send()) + _client_frames(client, [b"b"])
    assert read_binary_frames(reader, ping_then_binary, masked=True, max_size=100) == (
        ping_then_binary
    )
    unmasked = bytes((0x82, 1)) + b"u"  # a client must mask: websockets reports it
    assert read_binary_frames(reader, unmasked, masked=True, max_size=100) == unmasked
    too_big = _client_frames(client, [bytes(101)])  # websockets closes with 1009
    assert read_binary_frames(reader, too_big, masked=True, max_size=100) == too_big
    assert reader.received == []


class _Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, data: list[bytes]) -> None:
        self.written += b"".join(data)


@settings(max_examples=30, deadline=None)
@given(payloads)
def test_written_frames_are_what_websockets_parses(frames: list[bytes]) -> None:
    server, client = _open_pair()
    from_client, from_server = _Transport(), _Transport()
    for payload in frames:
        write_binary_frame(from_client, payload, masking=True)  # type: ignore[arg-type]
        write_binary_frame(from_server, payload, masking=False)  # type: ignore[arg-type]
    server.receive_data(from_client.written)
    client.receive_data(from_server.written)
    assert _received(server) == frames
    assert _received(client) == frames


def test_masks_come_from_a_pool_and_differ() -> None:
    source = MaskSource()
    masks = [source() for _ in range(MaskSource.POOL // 4 + 3)]  # across a pool refill
    assert all(len(mask) == 4 for mask in masks)
    assert len(set(masks)) > len(masks) // 2
