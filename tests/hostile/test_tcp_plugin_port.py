"""Hostile input: raw bytes at the out-of-tree TCP transport's port (examples/tcp_transport).

The promise is the built-in transports' own: a peer that breaks the rules
loses its connection, and only its connection; a client on the same server
keeps working.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from flare_runtime.client import connect
from flare_runtime.metadata import Metadata
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.protocol.frames import encode_hello
from flare_runtime.protocol.opening import OPENING_LENGTH, encode_opening_block
from flare_runtime.server import Server, ServerOptions
from flare_runtime.testing.service import SERVICE, BytesValue, ConformanceService, Routes

UNIT = 1.0
HANDSHAKE_TIMEOUT = 0.5 * UNIT


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    options = ServerOptions(protocol=ProtocolConfig(handshake_timeout=HANDSHAKE_TIMEOUT))
    served = Server([(SERVICE, ConformanceService())], options=options)
    await served.start(listen={"tcp": "127.0.0.1:0"})
    try:
        yield served
    finally:
        await served.shutdown(grace=0)


async def expect_closed_by_server(server: Server, data: bytes) -> None:
    """Send `data` on a raw connection; return once the server has closed it (10 s at most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port("tcp"))
    try:
        writer.write(data)
        async with asyncio.timeout(10 * UNIT):
            while await reader.read(65536):
                pass  # the server's HELLO, CLOSE...: read until it hangs up
    except ConnectionResetError:
        pass  # closed with a reset: closed too
    finally:
        writer.close()


async def still_serves(server: Server) -> None:
    async with connect(f"tcp://127.0.0.1:{server.port('tcp')}") as channel:
        reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"ok"))
        assert reply.value == b"ok"


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(OPENING_LENGTH.pack(1 << 20), id="opening-block-too-large"),
        pytest.param(OPENING_LENGTH.pack(3) + b"\x05ab", id="malformed-opening-block"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-request"),
        pytest.param(
            encode_opening_block(Metadata()) + encode_hello(1, 1) + b"\xff" * 40, id="bad-frame"
        ),
    ],
)
async def test_garbage_closes_only_that_connection(server: Server, garbage: bytes) -> None:
    """Input: an oversized or malformed opening block, HTTP, or a bad Flare frame.

    Outcome: the server closes that connection; another client is served.
    """
    async with connect(f"tcp://127.0.0.1:{server.port('tcp')}") as good:
        await expect_closed_by_server(server, garbage)
        reply = await good.unary_unary(Routes.ECHO, BytesValue(value=b"fine"))
        assert reply.value == b"fine"
    await still_serves(server)


async def test_a_peer_that_never_sends_its_opening_block_is_dropped(server: Server) -> None:
    """Input: a connection that sends nothing. Outcome: closed after the handshake timeout."""
    started = asyncio.get_running_loop().time()
    await expect_closed_by_server(server, b"")
    assert asyncio.get_running_loop().time() - started >= HANDSHAKE_TIMEOUT * 0.9
    await still_serves(server)
