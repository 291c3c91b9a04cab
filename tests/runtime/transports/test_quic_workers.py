"""`flare_runtime.transports.quic_workers`: the messages workers route QUIC datagrams with,
and the one aioquic internal it reads.

The routing itself runs in real worker processes: see
tests/runtime/workers/test_quic_migration.py.
"""

from __future__ import annotations

import asyncio

import pytest
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration

from flare_runtime.transports.quic_workers import (
    ASK,
    FORWARD,
    NOT_OWNER,
    OWNER,
    RoutedMessage,
    _holds,
    decode_message,
    encode_message,
    short_header_connection_id,
)

CID = bytes(range(8))


@pytest.mark.parametrize(
    "message",
    [
        RoutedMessage(FORWARD, 3, CID, ("192.0.2.7", 51000), b"\x41" + CID + b"payload"),
        RoutedMessage(ASK, 65535, CID, ("2001:db8::1", 443, 0, 0), b"\x40" + CID),
        RoutedMessage(OWNER, 0, CID),
        RoutedMessage(NOT_OWNER, 12, CID),
    ],
)
def test_every_message_decodes_to_what_was_encoded(message: RoutedMessage) -> None:
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01", b"\x09\x00\x01\x08abc", b"\x01\x00\x01\x08" + CID + b"\x00"],
)
def test_bytes_that_are_not_a_message_are_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a routed QUIC message|truncated"):
        decode_message(data)


def test_only_short_header_packets_long_enough_have_a_routable_connection_id() -> None:
    assert short_header_connection_id(b"\x41" + CID + b"x", 8) == CID
    assert short_header_connection_id(b"\xc1" + CID + b"x", 8) is None  # long header
    assert short_header_connection_id(b"\x41" + CID, 8) is None  # nothing after the id
    assert short_header_connection_id(b"", 8) is None


async def test_aioquic_still_keeps_its_connections_by_connection_id() -> None:
    """The one aioquic internal the routing reads: QuicServer._protocols, a dict keyed by
    the connection ids it answers to. If aioquic renames or reshapes it, this fails."""
    server = QuicServer(configuration=QuicConfiguration(is_client=False))
    table = _holds(server)
    assert isinstance(table, dict)
    assert table is server._protocols
    await asyncio.sleep(0)
