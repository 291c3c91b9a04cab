"""`ServerConnection`'s prepared pushes and abort, over real sockets on every wire transport."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from flare_runtime.errors import ConnectionClosedError, RpcError
from flare_runtime.server_connection import PreparedPush, ServerConnection
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.service import BytesValue, Routes, StringValue
from flare_runtime.testing.timing import UNIT, wait_until
from flare_runtime.wire.client import WireChannel

PUSH_TYPE = 0x7F01  # StringValue in the conformance PUSH_TYPES


def _only_connection(connections: Mapping[ServerConnection, object]) -> ServerConnection:
    (connection,) = connections
    return connection


@pytest.mark.parametrize("transport", ["websocket", "quic"])
async def test_a_prepared_push_reaches_the_client(transport: str) -> None:
    rig = await start_rig(transport)
    try:
        async with rig.connect() as channel:
            await channel.unary_unary(Routes.ECHO, BytesValue())
            connection = _only_connection(rig.server.connections)
            push = PreparedPush(PUSH_TYPE, StringValue(value="once for all").SerializeToString())
            connection.push_prepared(push)
            async with asyncio.timeout(10 * UNIT):
                async for received in channel.pushes():
                    assert received == StringValue(value="once for all")
                    break
            connection.close("done")
            with pytest.raises(ConnectionClosedError):
                connection.push_prepared(push)
    finally:
        await rig.server.shutdown(grace=UNIT)


@pytest.mark.parametrize("transport", ["websocket", "quic"])
async def test_abort_ends_the_connection_and_its_calls_at_once(transport: str) -> None:
    rig = await start_rig(transport)
    try:
        channel = await rig.channel()
        call = channel.stream_stream(Routes.BIDI_ECHO)
        await call.send(BytesValue(value=b"1"))
        async for _ in call:
            break
        connection = _only_connection(rig.server.connections)
        closed: list[ServerConnection] = []
        connection.add_close_callback(closed.append)
        connection.abort("test: cut off")
        assert connection.closed
        async with asyncio.timeout(10 * UNIT):
            await connection.wait_closed()
            await rig.service.cancelled_event.wait()  # the handler was cancelled
        assert closed == [connection]
        assert not rig.server.connections
        with pytest.raises(RpcError) as caught:
            async with asyncio.timeout(10 * UNIT):
                async for _ in call:
                    pass
        assert caught.value.code is StatusCode.UNAVAILABLE
        connection.abort("again")  # no-op once closed
        await channel.close()
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_a_client_that_stops_reading_is_aborted_after_its_close_stalls() -> None:
    """A graceful close waits behind the backlog for ever; abort does not wait."""
    rig = await start_rig("websocket")
    try:
        channel = await rig.channel()
        assert isinstance(channel, WireChannel)
        await channel.unary_unary(Routes.ECHO, BytesValue())
        connection = _only_connection(rig.server.connections)
        channel.endpoint.transport.pause_reading()  # the slow consumer
        push = PreparedPush(PUSH_TYPE, StringValue(value="x" * 65_536).SerializeToString())
        async with asyncio.timeout(10 * UNIT):
            while connection.buffered_bytes < 1 << 20:
                connection.push_prepared(push)
                await asyncio.sleep(0)  # let the socket take what it will
        connection.close("slow consumer")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(connection.wait_closed()), 0.5 * UNIT)
        assert rig.server.connections  # still held open by the unread backlog
        connection.abort("slow consumer")
        async with asyncio.timeout(10 * UNIT):
            await connection.wait_closed()
        assert not rig.server.connections
        channel.endpoint.transport.resume_reading()
        await wait_until(lambda: channel.closed)
        await channel.close()
    finally:
        await rig.server.shutdown(grace=UNIT)
