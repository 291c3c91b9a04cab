"""`ServerEndpoint` over an in-memory transport: no sockets, only bytes moved."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from flare_runtime.auth import AuthPlugin, Principal
from flare_runtime.dispatch import Dispatcher
from flare_runtime.errors import RpcError
from flare_runtime.metadata import EMPTY_METADATA, Metadata
from flare_runtime.protocol.config import ProtocolConfig, Settings
from flare_runtime.server import Server, ServerOptions
from flare_runtime.status import StatusCode
from flare_runtime.testing.memory import memory_channel, memory_pair
from flare_runtime.testing.service import (
    PUSH_TYPES,
    SERVICE,
    BytesValue,
    ConformanceService,
    Int64Value,
    Routes,
    StringValue,
)
from flare_runtime.testing.timing import UNIT
from flare_runtime.wire.client import ClientCall


def _server(**options: object) -> tuple[Server, ConformanceService]:
    service = ConformanceService()
    server = Server([(SERVICE, service)], push_tables=[PUSH_TYPES], **options)  # type: ignore[arg-type]
    return server, service


async def test_calls_of_every_shape_over_memory() -> None:
    server, _ = _server()
    async with memory_channel(server) as channel:
        assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"m"))).value == b"m"
        stream = channel.unary_stream(Routes.COUNT, Int64Value(value=3))
        assert [reply.value async for reply in stream] == [0, 1, 2]
        total = await channel.stream_unary(Routes.SUM, (Int64Value(value=n) for n in range(5)))
        assert total.value == 10
        assert len(server.connections) == 1
    await asyncio.sleep(0)
    assert not server.connections  # closing the channel closed the server side


async def test_pushes_and_on_push_callback() -> None:
    server, _ = _server()
    async with memory_channel(server) as channel:
        seen: list[str] = []
        channel.on_push(lambda message: seen.append(message.value))  # type: ignore[attr-defined]
        pushes = channel.pushes()
        # The iterator is open (waiting) before the pushes arrive: both get them.
        first_task = asyncio.ensure_future(anext(pushes))
        await asyncio.sleep(0)
        await channel.unary_unary(Routes.PUSH_ME, Int64Value(value=2))
        assert await first_task == StringValue(value="push 0")
        assert seen == ["push 0", "push 1"]


@pytest.mark.parametrize("eager", [False, True])
async def test_server_deadline_cancels_the_handler_and_answers(eager: bool) -> None:
    # Eager: the handler suspends, and the deadline cancels it in the task that took it over.
    server, service = _server(options=ServerOptions(eager_handlers=eager))
    async with memory_channel(server) as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(
                Routes.ECHO, BytesValue(), metadata={"x-sleep": "30"}, timeout=0.05
            )
        assert caught.value.code is StatusCode.DEADLINE_EXCEEDED
        async with asyncio.timeout(5 * UNIT):
            await service.cancelled_event.wait()


async def test_unary_request_that_does_not_parse_is_invalid_argument() -> None:
    server, _ = _server()
    channel, _, client_end = memory_pair(server)
    # A unary call whose request bytes are garbage.
    call = channel.endpoint.start_call(
        Routes.ECHO,
        metadata=EMPTY_METADATA,
        timeout=None,
        message=b"\xff\xff\xff",
        end_stream=True,
        info=None,
    )
    call.future = asyncio.get_running_loop().create_future()
    with pytest.raises(RpcError) as caught:
        async with asyncio.timeout(5 * UNIT):
            await call.future
    assert caught.value.code is StatusCode.INVALID_ARGUMENT
    assert client_end.written > 0
    # The connection is still usable.
    assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"ok"))).value == b"ok"
    await channel.close()


async def test_metadata_key_the_wire_allows_but_metadata_forbids() -> None:
    server, _ = _server()
    channel, _, _ = memory_pair(server)
    endpoint = channel.endpoint
    call_id = endpoint.conn.start_call(
        Routes.ECHO.wire_id, (("bad key", "x"),), message=b"", end_stream=True
    )
    # Speak the protocol by hand: `Metadata` refuses that key.
    call = ClientCall(call_id, None)
    call.future = asyncio.get_running_loop().create_future()
    endpoint.calls[call_id] = call
    endpoint.flush()
    with pytest.raises(RpcError) as caught:
        async with asyncio.timeout(5 * UNIT):
            await call.future
    assert caught.value.code is StatusCode.INVALID_ARGUMENT
    assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"ok"))).value == b"ok"
    await channel.close()


class _CrashingAuth(AuthPlugin):
    """An auth plugin with a bug: it raises something other than RpcError."""

    async def authenticate(self, metadata: Metadata, peer: str) -> Principal | None:
        await asyncio.sleep(0.05 * UNIT)  # calls start while the connection's auth is pending
        raise ValueError("plugin bug")


async def test_a_crashing_auth_plugin_fails_calls_with_internal_and_no_call_hangs() -> None:
    server, _ = _server(auth=_CrashingAuth())
    channel, _, _ = memory_pair(server, metadata={"authorization": "Bearer t"})
    try:
        async with asyncio.timeout(10 * UNIT):
            # Started while the auth is pending: the stream must still end.
            stream = channel.unary_stream(Routes.COUNT, Int64Value(value=2))
            assert [reply.value async for reply in stream] == [0, 1]
            assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"m"))).value == b"m"
            # A route that needs the principal reports the plugin's failure.
            with pytest.raises(RpcError) as caught:
                await channel.unary_unary(Routes.WHO_AM_I, StringValue())
            assert caught.value.code is StatusCode.INTERNAL
    finally:
        await channel.close()


@pytest.mark.parametrize("route", ["unary", "server_stream", "bidi"])
async def test_response_headers_over_the_clients_limit_end_the_call(route: str) -> None:
    """The headers are echoed from the request: fine for the server, too big for this client."""
    server, _ = _server()
    config = ProtocolConfig(settings=Settings(max_metadata_size=1024))
    metadata = [("x-echo-big", "a" * 2000)]
    async with memory_channel(server, client_config=config) as channel:
        with pytest.raises(RpcError) as caught:
            async with asyncio.timeout(10 * UNIT):
                if route == "unary":
                    await channel.unary_unary(Routes.ECHO, BytesValue(), metadata=metadata)
                elif route == "server_stream":
                    count = Int64Value(value=1)
                    call = channel.unary_stream(Routes.COUNT, count, metadata=metadata)
                    [reply async for reply in call]
                else:
                    requests = [BytesValue()]
                    bidi = channel.stream_stream(Routes.BIDI_ECHO, requests, metadata=metadata)
                    [reply async for reply in bidi]
        assert caught.value.code is StatusCode.RESOURCE_EXHAUSTED
        # The connection is still usable.
        assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"m"))).value == b"m"


@pytest.mark.parametrize("route", ["server_stream", "client_stream", "bidi"])
async def test_a_failure_inside_flare_ends_a_streaming_call_with_internal(
    route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the dispatcher itself raises (not a handler, whose errors are mapped)."""

    def broken(*args: object) -> object:
        raise RuntimeError("bug in the dispatcher")

    name = {"server_stream": "server_stream", "client_stream": "client_stream"}.get(
        route, "bidi_stream"
    )
    monkeypatch.setattr(Dispatcher, name, broken)
    server, _ = _server()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: None)  # the re-raised bug is expected
    async with memory_channel(server) as channel:
        with pytest.raises(RpcError) as caught:
            async with asyncio.timeout(10 * UNIT):
                if route == "server_stream":
                    call = channel.unary_stream(Routes.COUNT, Int64Value(value=2))
                    [reply async for reply in call]
                elif route == "client_stream":
                    await channel.stream_unary(Routes.SUM, [Int64Value(value=1)])
                else:
                    bidi = channel.stream_stream(Routes.BIDI_ECHO, [BytesValue()])
                    [reply async for reply in bidi]
        assert caught.value.code is StatusCode.INTERNAL
        assert caught.value.message == "internal error"


async def test_route_default_timeout_applies_to_a_call_sent_without_one() -> None:
    """The server enforces the route's default through the protocol's own deadline timer."""
    echo = dataclasses.replace(
        Routes.ECHO, options=dataclasses.replace(Routes.ECHO.options, default_timeout=0.05)
    )
    routes = tuple(echo if route.path == echo.path else route for route in SERVICE.routes)
    service = ConformanceService()
    server = Server([(dataclasses.replace(SERVICE, routes=routes), service)])
    async with memory_channel(server) as channel:
        started = time.monotonic()
        with pytest.raises(RpcError) as caught:
            async with asyncio.timeout(10 * UNIT):  # the client itself sends no deadline
                await channel.unary_unary(Routes.ECHO, BytesValue(), metadata={"x-sleep": "30"})
        assert caught.value.code is StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        async with asyncio.timeout(5 * UNIT):
            await service.cancelled_event.wait()
        # The connection is fine afterwards, and a quick call beats the default.
        assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"m"))).value == b"m"


@pytest.mark.parametrize("eager", [False, True])
async def test_unary_calls_behave_alike_with_and_without_eager_handlers(eager: bool) -> None:
    # A handler that suspends: test_server_deadline_cancels_the_handler_and_answers.
    server, _ = _server(options=ServerOptions(eager_handlers=eager))
    async with memory_channel(server) as channel:
        # Finishes without suspending (no task at all when eager).
        replies = await asyncio.gather(
            *(channel.unary_unary(Routes.ECHO, BytesValue(value=bytes([n]))) for n in range(20))
        )
        assert [reply.value for reply in replies] == [bytes([n]) for n in range(20)]
