"""`ClientEndpoint` and `WireChannel` details the conformance suite does not reach."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from flare_runtime.errors import RpcError
from flare_runtime.protocol import (
    SERVER,
    CallStarted,
    Connection,
    HandshakeCompleted,
    MessageReceived,
    ProtocolConfig,
)
from flare_runtime.routing import Transport
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.memory import RecordingTransport
from flare_runtime.testing.service import BytesValue, Int64Value, Routes
from flare_runtime.testing.timing import UNIT
from flare_runtime.wire.client import ClientEndpoint, WireChannel


@pytest.mark.parametrize("transport", ["websocket", "quic"])
async def test_several_tasks_await_the_headers_and_one_gives_up(transport: str) -> None:
    rig = await start_rig(transport)
    try:
        async with rig.connect() as channel:
            call = channel.stream_stream(Routes.BIDI_ECHO)
            # The echo handler sends its headers with its first response.
            leaving = asyncio.ensure_future(call.initial_metadata())
            staying = [asyncio.ensure_future(call.initial_metadata()) for _ in range(2)]
            await asyncio.sleep(0.05 * UNIT)
            leaving.cancel()
            await call.send(BytesValue(value=b"h"))
            async with asyncio.timeout(10 * UNIT):
                headers = await asyncio.gather(*staying)
            assert headers[0] is headers[1]
            assert leaving.cancelled()
            async for reply in call:
                assert reply.value == b"h"
                break
            call.cancel()
    finally:
        await rig.server.shutdown(grace=UNIT)


async def test_each_call_shape_takes_its_last_message_from_a_compact_end() -> None:
    # A server may end any call with MESSAGE|END_CALL (docs/wire-format.md §3.4);
    # Flare's own server does so for unary answers, another may for streams.
    transport = RecordingTransport()
    config = ProtocolConfig(keepalive_interval=None)
    endpoint = ClientEndpoint(transport, config, Transport.QUIC, {}, 100)
    channel = WireChannel(endpoint)
    server = Connection(SERVER, config, now=0.0)

    routes: dict[int, int] = {}

    def serve() -> None:
        server.receive_data(transport.take(), 0.0)
        for event in server.events_received():
            if isinstance(event, CallStarted):  # compact (with the request) or not
                routes[event.call_id] = event.wire_id
                request = event.message
            else:
                assert isinstance(event, MessageReceived | HandshakeCompleted)
                request = event.data if isinstance(event, MessageReceived) else None
            if request is None:
                continue
            call_id = event.call_id  # type: ignore[union-attr]
            if routes[call_id] == Routes.ECHO.wire_id:
                server.send_final_message(call_id, request)
            else:
                server.send_message(call_id, Int64Value(value=1).SerializeToString())
                server.send_final_message(call_id, Int64Value(value=2).SerializeToString())
        endpoint.data_received(server.data_to_send())

    unary = asyncio.ensure_future(channel.unary_unary(Routes.ECHO, BytesValue(value=b"q")))
    stream = channel.unary_stream(Routes.COUNT, Int64Value(value=2))
    for _ in range(3):  # the calls start, their frames are flushed, the server answers
        await asyncio.sleep(0)
        serve()
    async with asyncio.timeout(5 * UNIT):
        assert (await unary).value == b"q"
        assert [reply.value async for reply in stream] == [1, 2]
    assert endpoint.calls == {}


def _client() -> tuple[RecordingTransport, ClientEndpoint, WireChannel]:
    transport = RecordingTransport()
    endpoint = ClientEndpoint(
        transport, ProtocolConfig(keepalive_interval=None), Transport.WEBSOCKET, {}, 100
    )
    return transport, endpoint, WireChannel(endpoint)


async def test_a_route_without_a_wire_id_is_unimplemented_and_sends_nothing() -> None:
    transport, endpoint, channel = _client()
    hello = len(transport.writes)
    grpc_only = dataclasses.replace(Routes.ECHO, service_id=0, route_id=0)
    with pytest.raises(RpcError) as caught:
        await channel.unary_unary(grpc_only, BytesValue())
    assert caught.value.code is StatusCode.UNIMPLEMENTED
    assert len(transport.writes) == hello
    assert endpoint.calls == {}


async def test_the_route_observer_sees_each_call_before_it_is_written() -> None:
    transport, endpoint, channel = _client()
    seen: list[tuple[str, int]] = []
    endpoint.route_observer = lambda route: seen.append((route.path, len(transport.writes)))
    hello = len(transport.writes)
    call = channel.unary_stream(Routes.COUNT, Int64Value(value=1))
    assert seen == [(Routes.COUNT.path, hello)]
    assert len(transport.writes) > hello
    call.cancel()


async def test_close_ends_open_calls_with_cancelled() -> None:
    transport, endpoint, channel = _client()
    transport.endpoint = endpoint
    pending = asyncio.ensure_future(channel.unary_unary(Routes.ECHO, BytesValue()))
    await asyncio.sleep(0)
    assert len(endpoint.calls) == 1
    async with asyncio.timeout(5 * UNIT):
        await channel.close()
        with pytest.raises(RpcError) as caught:
            await pending
    assert caught.value.code is StatusCode.CANCELLED
    assert channel.closed and endpoint.calls == {}
