"""WebSocket-specific behaviour: keepalive, TLS 1.3, bad input, connection metadata."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import ssl
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from flare_runtime import connect
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.protocol.config import CLIENT, ProtocolConfig, Settings
from flare_runtime.protocol.connection import Connection
from flare_runtime.protocol.events import CallEnded
from flare_runtime.server import Server, ServerOptions, TLSFiles
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.service import (
    SERVICE,
    BytesValue,
    ConformanceService,
    Int64Value,
    Routes,
    StringValue,
)
from flare_runtime.testing.timing import UNIT, wait_until
from flare_runtime.transports.quic_certs import write_dev_certificate
from flare_runtime.transports.websocket import MAX_WEBSOCKET_MESSAGE, _WebSocketAdapter
from flare_runtime.wire.client import WireChannel


async def test_keepalive_timeout_closes_a_dead_peer() -> None:
    options = ServerOptions(protocol=ProtocolConfig(keepalive_interval=0.2, keepalive_timeout=0.3))
    rig = await start_rig("websocket", options)
    try:
        channel = await rig.channel(protocol=ProtocolConfig(keepalive_interval=None))
        assert isinstance(channel, WireChannel)
        await channel.unary_unary(Routes.ECHO, BytesValue())
        assert len(rig.server.connections) == 1
        # The client stops reading: it never answers the server's PING.
        channel.endpoint.transport.pause_reading()
        await wait_until(lambda: not rig.server.connections, 10 * UNIT)
        channel.endpoint.transport.resume_reading()
        await wait_until(lambda: channel.closed, 10 * UNIT)
        await channel.close()
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_live_peer_survives_keepalive() -> None:
    options = ServerOptions(protocol=ProtocolConfig(keepalive_interval=0.1, keepalive_timeout=0.3))
    rig = await start_rig("websocket", options)
    try:
        async with rig.connect(protocol=ProtocolConfig(keepalive_interval=None)) as channel:
            await asyncio.sleep(1.0 * UNIT)  # many keepalive rounds
            assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"k"))).value == b"k"
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_tls13_wss(tmp_path: Path) -> None:
    files = write_dev_certificate(tmp_path, names=["127.0.0.1"])
    server = Server([(SERVICE, ConformanceService())])
    await server.start(
        websocket="127.0.0.1:0", tls=TLSFiles(str(files.certificate), str(files.private_key))
    )
    try:
        context = ssl.create_default_context(cafile=str(files.certificate))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        url = f"wss://127.0.0.1:{server.port('websocket')}"
        async with connect(url, ssl_context=context) as channel:
            assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"s"))).value == b"s"
            assert isinstance(channel, WireChannel)
            transport = channel.endpoint.transport
            ssl_object = transport.transport.get_extra_info("ssl_object")  # type: ignore[attr-defined]
            assert ssl_object.version() == "TLSv1.3"
        # An untrusted certificate is refused.
        with pytest.raises(ConnectionClosedError):
            await connect(url, open_timeout=5 * UNIT)
    finally:
        await server.shutdown(grace=UNIT)


async def test_garbage_closes_only_that_connection() -> None:
    rig = await start_rig("websocket")
    try:
        async with rig.connect() as good:
            async with raw_connect(rig.url) as bad:
                await bad.send(b"\x00\x00\x00\x05\xff\x00\x00\x00\x00\x00hello" * 3)
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(10 * UNIT):
                        while True:
                            await bad.recv()
            async with raw_connect(rig.url) as texting:
                await texting.send("text is not allowed")
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(10 * UNIT):
                        while True:
                            await texting.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1003
            assert (await good.unary_unary(Routes.ECHO, BytesValue(value=b"g"))).value == b"g"
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_handshake_headers_become_connection_metadata() -> None:
    rig = await start_rig("websocket")
    try:
        token = rig.token("dave")
        async with rig.connect(metadata={"tenant": "acme"}) as channel:
            assert (await channel.unary_unary(Routes.ECHO, BytesValue())).value == b""
            (connection,) = rig.server.connections
            assert connection.metadata.get("x-flare-tenant") == "acme"
        # Browsers cannot set headers: ?access_token= works instead.
        async with raw_connect(f"{rig.url}/?access_token={token}"):
            await wait_until(lambda: len(rig.server.connections) == 1, 5 * UNIT)
            (connection,) = rig.server.connections
            await wait_until(lambda: connection.principal is not None, 5 * UNIT)
            principal = connection.principal
            assert principal is not None
            assert principal.subject == "dave"
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_an_open_connection_keeps_no_upgrade_request_headers() -> None:
    """The upgrade request's headers are not held for the life of the connection (websockets'
    parser keeps the request object; an idle connection would pay ~2 KB for its headers)."""
    rig = await start_rig("websocket")
    try:
        async with rig.connect(metadata={"probe": "c4f1e2"}) as channel:
            assert (await channel.unary_unary(Routes.ECHO, BytesValue())).value == b""
            (connection,) = rig.server.connections
            assert connection.metadata.get("x-flare-probe") == "c4f1e2"
            gc.collect()
            held = [
                headers
                for headers in gc.get_objects()
                if isinstance(headers, Headers) and headers.get("x-flare-probe") == "c4f1e2"
            ]
            assert held == []
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_auth_reaches_who_am_i_over_handshake_token() -> None:
    rig = await start_rig("websocket")
    try:
        async with rig.connect(token=rig.token("erin")) as channel:
            assert (await channel.unary_unary(Routes.WHO_AM_I, StringValue())).value == "erin"
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_route_message_size_limit_is_resource_exhausted() -> None:
    limited = dataclasses.replace(
        Routes.ECHO, options=dataclasses.replace(Routes.ECHO.options, max_message_bytes=64)
    )
    service = dataclasses.replace(SERVICE, routes=(limited,))
    server = Server([(service, ConformanceService())])
    await server.start(websocket="127.0.0.1:0")
    try:
        async with connect(f"ws://127.0.0.1:{server.port('websocket')}") as channel:
            small = await channel.unary_unary(limited, BytesValue(value=bytes(10)))
            assert small.value == bytes(10)
            with pytest.raises(RpcError) as caught:
                await channel.unary_unary(limited, BytesValue(value=bytes(100)))
            assert caught.value.code is StatusCode.RESOURCE_EXHAUSTED
            # The connection is still fine.
            assert (await channel.unary_unary(limited, BytesValue())).value == b""
    finally:
        await server.shutdown(grace=UNIT)


async def test_permessage_deflate_when_asked_for() -> None:
    server = Server([(SERVICE, ConformanceService())], options=ServerOptions(compression="deflate"))
    await server.start(websocket="127.0.0.1:0")
    try:
        url = f"ws://127.0.0.1:{server.port('websocket')}"
        async with connect(url, compression="deflate") as channel:
            assert isinstance(channel, WireChannel)
            assert channel.endpoint.transport.protocol.extensions  # type: ignore[attr-defined]
            big = BytesValue(value=b"flare " * 50_000)
            assert await channel.unary_unary(Routes.ECHO, big) == big
        async with connect(url) as plain:  # a client without compression still works
            assert (await plain.unary_unary(Routes.ECHO, big)) == big
    finally:
        await server.shutdown(grace=UNIT)


async def test_large_messages_span_websocket_messages() -> None:
    rig = await start_rig("websocket")
    try:
        async with rig.connect() as channel:
            big = BytesValue(value=bytes(range(256)) * 12_000)  # ~3 MiB: split in 1 MiB pieces
            assert await channel.unary_unary(Routes.ECHO, big) == big
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_a_peer_that_never_upgrades_is_dropped() -> None:
    options = ServerOptions(protocol=ProtocolConfig(handshake_timeout=0.3))
    rig = await start_rig("websocket", options)
    try:
        port = int(rig.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n")  # and then nothing
        async with asyncio.timeout(10 * UNIT):
            assert await reader.read() == b""  # the server closed the socket
        writer.close()
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_a_client_that_stops_reading_the_socket_blocks_the_sender() -> None:
    """Past flow control (a huge window), the socket's own backpressure bounds the server."""
    options = ServerOptions(max_write_buffer=256 * 1024)
    rig = await start_rig("websocket", options)
    try:
        wide_open = ProtocolConfig(settings=Settings(initial_window_size=1 << 30))
        channel = await rig.channel(protocol=wide_open)
        assert isinstance(channel, WireChannel)
        call = channel.unary_stream(Routes.FLOOD, Int64Value(value=100_000))  # 6.4 GB
        async for _ in call:
            break
        channel.endpoint.transport.pause_reading()
        await asyncio.sleep(1.0 * UNIT)
        stalled_at = rig.service.flood_sent
        await asyncio.sleep(0.5 * UNIT)
        assert rig.service.flood_sent == stalled_at  # the handler is blocked, not buffering
        assert stalled_at < 1000  # < 64 MB: socket buffers and the write buffer, no more
        channel.endpoint.transport.resume_reading()
        call.cancel()
        await channel.close()
    finally:
        await rig.server.shutdown(grace=UNIT)


def test_the_adapter_asks_for_writes_of_one_message_at_most() -> None:
    """The endpoint cuts output at frame boundaries to this size (tests/runtime/wire)."""
    assert _WebSocketAdapter.max_write_size == MAX_WEBSOCKET_MESSAGE


async def test_server_closing_a_connection_ends_its_calls_with_the_reason() -> None:
    rig = await start_rig("websocket")
    try:
        async with rig.connect() as channel:
            call = channel.stream_stream(Routes.BIDI_ECHO)
            await call.send(BytesValue(value=b"1"))
            async for _ in call:
                break
            (connection,) = rig.server.connections
            connection.close("kicked: logged in elsewhere")
            with pytest.raises(RpcError) as caught:
                async with asyncio.timeout(10 * UNIT):
                    async for _ in call:
                        pass
            assert caught.value.code is StatusCode.UNAVAILABLE
            assert "kicked: logged in elsewhere" in caught.value.message
            async with asyncio.timeout(10 * UNIT):
                await rig.service.cancelled_event.wait()  # the handler was cancelled
            with pytest.raises(RpcError) as caught:
                await channel.unary_unary(Routes.ECHO, BytesValue())
            assert caught.value.code is StatusCode.UNAVAILABLE
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_any_websocket_framing_of_the_stream_is_accepted() -> None:
    """Fragmented messages, pings between frames, frames split across TCP writes."""
    rig = await start_rig("websocket")
    try:
        client = Connection(CLIENT, ProtocolConfig(keepalive_interval=None))
        request = BytesValue(value=b"frag").SerializeToString()
        for _ in range(3):
            client.start_call(Routes.ECHO.wire_id, (), message=request, end_stream=True)
        stream = client.data_to_send()
        async with raw_connect(rig.url, compression=None) as ws:
            # One WebSocket message in three fragments, a ping in between.
            third = len(stream) // 3
            await ws.send([stream[:third], stream[third : 2 * third], stream[2 * third :]])
            pong = await ws.ping()
            async with asyncio.timeout(10 * UNIT):
                await pong
                replies = 0
                while replies < 3:
                    client.receive_data(await ws.recv(), 0.0)  # type: ignore[arg-type]
                    replies += sum(
                        isinstance(event, CallEnded) and event.status is StatusCode.OK
                        for event in client.events_received()
                    )
    finally:
        await rig.server.shutdown(grace=UNIT)


@pytest.mark.parametrize(
    ("metadata", "token"),
    [({"tenant": "東京"}, None), ({"tenant": "a\r\nx-flare-evil: 1"}, None), ({}, "t\nx")],
)
async def test_metadata_that_cannot_be_an_http_header_is_refused_at_once(
    metadata: dict[str, str], token: str | None
) -> None:
    """`connect` refuses it before opening a socket (raising inside the adapter's
    connection_made would leave connect waiting for its open timeout)."""
    rig = await start_rig("websocket")
    try:
        async with asyncio.timeout(5 * UNIT):
            with pytest.raises(ConfigurationError) as caught:
                await connect(rig.url, metadata=metadata, token=token, open_timeout=60 * UNIT)
        assert "cannot travel in an HTTP header" in str(caught.value)
        assert not rig.server.connections
    finally:
        await rig.server.shutdown(grace=UNIT)
