"""The conformance suite: one set of tests every transport must pass.

Import everything from this module into a test module and provide a
``transport_name`` fixture (see `flare_runtime.testing`). Every test runs
over real sockets on 127.0.0.1 against `ConformanceService`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest
from google.protobuf.message import Message

from flare_runtime.errors import ConnectionClosedError, RpcError
from flare_runtime.interceptors import (
    ClientCallInfo,
    ClientInterceptor,
    ClientStreamCallNext,
    ClientUnaryCallNext,
)
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import Harness, Rig, get_harness, start_rig
from flare_runtime.testing.service import (
    FAIL_MESSAGE,
    SECRET,
    BytesValue,
    Int64Value,
    Routes,
    StringValue,
)
from flare_runtime.testing.timing import UNIT, wait_until

CONCURRENT_CALLS = 1000
"""Seconds; timeouts are generous multiples of it so a slow CI machine does not flake."""

TEST_TIMEOUT = 90 * UNIT
"""No conformance test may take longer: a hang becomes a failure, not a stuck suite."""

_Test = TypeVar("_Test", bound=Callable[..., Awaitable[None]])


def _bounded(test: _Test) -> _Test:
    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> None:
        async with asyncio.timeout(TEST_TIMEOUT):
            await test(*args, **kwargs)

    return cast(_Test, bounded)


__all__ = [
    "harness",
    "rig",
    "test_all_cardinalities_1000_concurrent_calls_on_one_connection",
    "test_auth_bad_token_is_unauthenticated",
    "test_auth_expired_token_is_unauthenticated",
    "test_auth_missing_token_on_open_and_protected_routes",
    "test_auth_per_call_token",
    "test_auth_scopes_permission_denied",
    "test_auth_token_given_at_connect_authenticates_the_connection",
    "test_auth_valid_token_reaches_handler_as_principal",
    "test_client_cancel_cancels_server_handler",
    "test_client_interceptors_order_and_metadata",
    "test_deadline_exceeded_on_both_sides",
    "test_every_status_code_round_trips_with_details",
    "test_graceful_shutdown_loses_no_in_flight_call",
    "test_handler_exception_is_internal_without_leaking",
    "test_metadata_headers_and_trailers",
    "test_push_reaches_client",
    "test_server_cancels_call",
    "test_server_interceptors_run_in_order",
    "test_slow_reader_is_back_pressured",
    "test_streaming_error_after_messages",
    "test_unknown_route_is_unimplemented",
]


@pytest.fixture
def harness(transport_name: str) -> Harness:
    """How the suite serves the transport under test: its registered harness.

    A test module may override this fixture instead of naming a transport, to run
    the suite over a server the registry does not start (the ASGI mount:
    tests/runtime/transports/test_asgi_conformance.py).
    """
    return get_harness(transport_name)


@pytest.fixture
async def rig(harness: Harness) -> AsyncIterator[Rig]:
    """The conformance server on the transport under test."""
    started = await start_rig(harness)
    try:
        yield started
    finally:
        await started.server.shutdown(grace=UNIT)


@_bounded
async def test_all_cardinalities_1000_concurrent_calls_on_one_connection(rig: Rig) -> None:
    async with rig.connect() as channel:

        async def unary(i: int) -> bytes:
            reply = await channel.unary_unary(Routes.ECHO, BytesValue(value=b"%d" % i))
            return reply.value

        async def server_stream(i: int) -> list[int]:
            call = channel.unary_stream(Routes.COUNT, Int64Value(value=i % 5))
            return [reply.value async for reply in call]

        async def client_stream(i: int) -> int:
            requests = [Int64Value(value=n) for n in range(i % 5)]
            return (await channel.stream_unary(Routes.SUM, requests)).value

        async def bidi(i: int) -> list[bytes]:
            requests = [BytesValue(value=b"%d" % n) for n in range(i % 3)]
            call = channel.stream_stream(Routes.BIDI_ECHO, requests)
            return [reply.value async for reply in call]

        async with asyncio.timeout(60 * UNIT):
            unary_results = await asyncio.gather(*(unary(i) for i in range(CONCURRENT_CALLS)))
            assert unary_results == [b"%d" % i for i in range(CONCURRENT_CALLS)]
            streams = await asyncio.gather(*(server_stream(i) for i in range(CONCURRENT_CALLS)))
            assert streams == [list(range(i % 5)) for i in range(CONCURRENT_CALLS)]
            sums = await asyncio.gather(*(client_stream(i) for i in range(CONCURRENT_CALLS)))
            assert sums == [sum(range(i % 5)) for i in range(CONCURRENT_CALLS)]
            echoes = await asyncio.gather(*(bidi(i) for i in range(CONCURRENT_CALLS)))
            assert echoes == [[b"%d" % n for n in range(i % 3)] for i in range(CONCURRENT_CALLS)]


@_bounded
async def test_every_status_code_round_trips_with_details(rig: Rig) -> None:
    async with rig.connect() as channel:
        for code in StatusCode:
            if code is StatusCode.OK:
                continue
            with pytest.raises(RpcError) as caught:
                await channel.unary_unary(
                    Routes.ECHO, BytesValue(), metadata={"x-fail-code": str(int(code))}
                )
            assert caught.value.code is code
            assert caught.value.message == FAIL_MESSAGE
            assert caught.value.details == (StringValue(value=f"detail {int(code)}"),)


@_bounded
async def test_streaming_error_after_messages(rig: Rig) -> None:
    async with rig.connect() as channel:
        call = channel.unary_stream(
            Routes.COUNT, Int64Value(value=3), metadata={"x-fail-code": "10"}
        )
        with pytest.raises(RpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code is StatusCode.ABORTED


@_bounded
async def test_handler_exception_is_internal_without_leaking(rig: Rig) -> None:
    async with rig.connect() as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(Routes.ECHO, BytesValue(), metadata={"x-crash": "1"})
        assert caught.value.code is StatusCode.INTERNAL
        assert SECRET not in str(caught.value)
        assert caught.value.details == ()
        # The connection survives an RPC error.
        assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"ok"))).value == b"ok"


@_bounded
async def test_unknown_route_is_unimplemented(rig: Rig) -> None:
    unknown = type(Routes.ECHO)(
        path="/flare.testing.v1.ConformanceService/Missing",
        service_id=Routes.ECHO.service_id,
        route_id=99,
        cardinality=Routes.ECHO.cardinality,
        request_type=BytesValue,
        response_type=BytesValue,
        handler_name="missing",
    )
    async with rig.connect() as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(unknown, BytesValue())
        assert caught.value.code is StatusCode.UNIMPLEMENTED


@_bounded
async def test_deadline_exceeded_on_both_sides(rig: Rig) -> None:
    async with rig.connect() as channel:
        started = time.monotonic()
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(
                Routes.ECHO, BytesValue(), metadata={"x-sleep": str(30 * UNIT)}, timeout=0.2
            )
        assert caught.value.code is StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 10 * UNIT
        # The server cancelled its handler too.
        async with asyncio.timeout(10 * UNIT):
            await rig.service.cancelled_event.wait()


@_bounded
async def test_client_cancel_cancels_server_handler(rig: Rig) -> None:
    async with rig.connect() as channel:
        task = asyncio.ensure_future(
            channel.unary_unary(Routes.ECHO, BytesValue(), metadata={"x-sleep": str(30 * UNIT)})
        )
        await wait_until(lambda: rig.service.started > 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(10 * UNIT):
            await rig.service.cancelled_event.wait()
        # Streams: leaving the call cancels it as well.
        rig.service.cancelled_event.clear()
        call = channel.stream_stream(Routes.BIDI_ECHO)
        await call.send(BytesValue(value=b"1"))
        async for reply in call:
            assert reply.value == b"1"
            break
        call.cancel()
        async with asyncio.timeout(10 * UNIT):
            await rig.service.cancelled_event.wait()
        assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"x"))).value == b"x"


@_bounded
async def test_server_cancels_call(rig: Rig) -> None:
    """The server side ends a call early: the client sees the status, not a hang."""
    async with rig.connect() as channel:
        call = channel.stream_stream(Routes.BIDI_ECHO, metadata={"x-fail-code": "1"})
        with pytest.raises(RpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code is StatusCode.CANCELLED


@_bounded
async def test_metadata_headers_and_trailers(rig: Rig) -> None:
    async with rig.connect() as channel:
        call = channel.unary_stream(
            Routes.COUNT, Int64Value(value=2), metadata={"x-echo-color": "blue"}
        )
        headers = await call.initial_metadata()
        assert headers.get("x-echo-color") == "blue"
        assert [reply.value async for reply in call] == [0, 1]
        assert call.trailing_metadata().get("x-trailer-color") == "blue"


@_bounded
async def test_server_interceptors_run_in_order(rig: Rig) -> None:
    async with rig.connect() as channel:
        rig.interceptor_log.clear()
        await channel.unary_unary(Routes.ECHO, BytesValue(), metadata={"x-intercept": "1"})
        assert rig.interceptor_log == ["first:in", "second:in", "second:out", "first:out"]
        rig.interceptor_log.clear()
        call = channel.unary_stream(
            Routes.COUNT, Int64Value(value=1), metadata={"x-intercept": "1"}
        )
        assert [reply.value async for reply in call] == [0]
        assert rig.interceptor_log == ["first:in", "second:in", "second:out", "first:out"]
        assert call.trailing_metadata().get("x-seen-by-first") == "yes"
        assert call.trailing_metadata().get("x-seen-by-second") == "yes"


class _TaggingInterceptor(ClientInterceptor):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def intercept_stream(
        self,
        requests: AsyncIterator[Message],
        info: ClientCallInfo,
        call_next: ClientStreamCallNext,
    ) -> AsyncIterator[Message]:
        return self._stream(requests, info, call_next)

    async def _stream(
        self,
        requests: AsyncIterator[Message],
        info: ClientCallInfo,
        call_next: ClientStreamCallNext,
    ) -> AsyncIterator[Message]:
        self.log.append(f"{self.name}:stream-in")
        info.metadata = info.metadata + {f"x-echo-{self.name}": "1"}
        count = 0
        try:
            async for response in call_next(requests, info):
                count += 1
                yield response
        finally:
            self.log.append(f"{self.name}:stream-out:{count}")

    async def intercept_unary(
        self, request: Message, info: ClientCallInfo, call_next: ClientUnaryCallNext
    ) -> Message:
        self.log.append(f"{self.name}:in")
        info.metadata = info.metadata + {f"x-echo-{self.name}": "1"}
        try:
            return await call_next(request, info)
        finally:
            echoed = info.response_headers.get(f"x-echo-{self.name}")
            self.log.append(f"{self.name}:out:{echoed!s}")


@_bounded
async def test_client_interceptors_order_and_metadata(rig: Rig) -> None:
    log: list[str] = []
    interceptors = [_TaggingInterceptor("a", log), _TaggingInterceptor("b", log)]
    async with rig.connect(interceptors=interceptors) as channel:
        await channel.unary_unary(Routes.ECHO, BytesValue())
        assert log == ["a:in", "b:in", "b:out:1", "a:out:1"]
        log.clear()
        # Streaming shapes go through intercept_stream, in the same order.
        call = channel.unary_stream(Routes.COUNT, Int64Value(value=3))
        assert (await call.initial_metadata()).get("x-echo-b") == "1"
        assert [reply.value async for reply in call] == [0, 1, 2]
        total = await channel.stream_unary(Routes.SUM, [Int64Value(value=n) for n in range(4)])
        assert total.value == 6
        bidi = channel.stream_stream(Routes.BIDI_ECHO)
        await bidi.send(BytesValue(value=b"p"))
        await bidi.done_writing()
        assert [reply.value async for reply in bidi] == [b"p"]
        with pytest.raises(RpcError) as caught:
            async for _ in channel.unary_stream(
                Routes.COUNT, Int64Value(value=1), metadata={"x-fail-code": "9"}
            ):
                pass
        assert caught.value.code is StatusCode.FAILED_PRECONDITION
    assert log == ["a:stream-in", "b:stream-in", "b:stream-out:3", "a:stream-out:3"] + [
        "a:stream-in",
        "b:stream-in",
        "b:stream-out:1",
        "a:stream-out:1",
    ] * 2 + ["a:stream-in", "b:stream-in", "b:stream-out:0", "a:stream-out:0"]


@_bounded
async def test_auth_missing_token_on_open_and_protected_routes(rig: Rig) -> None:
    async with rig.connect() as channel:
        assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"o"))).value == b"o"
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(Routes.WHO_AM_I, StringValue())
        assert caught.value.code is StatusCode.UNAUTHENTICATED


@_bounded
async def test_auth_bad_token_is_unauthenticated(rig: Rig) -> None:
    async with rig.connect(token="not-a-jwt") as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(Routes.WHO_AM_I, StringValue())
        assert caught.value.code is StatusCode.UNAUTHENTICATED
        # Routes that need no authentication still work on that connection.
        assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"o"))).value == b"o"


@_bounded
async def test_auth_expired_token_is_unauthenticated(rig: Rig) -> None:
    async with rig.connect(token=rig.token(expires_in=-60)) as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(Routes.WHO_AM_I, StringValue())
        assert caught.value.code is StatusCode.UNAUTHENTICATED
        assert "expired" in caught.value.message


@_bounded
async def test_auth_valid_token_reaches_handler_as_principal(rig: Rig) -> None:
    async with rig.connect(token=rig.token("bob")) as channel:
        assert (await channel.unary_unary(Routes.WHO_AM_I, StringValue())).value == "bob"


@_bounded
async def test_auth_scopes_permission_denied(rig: Rig) -> None:
    async with rig.connect(token=rig.token("bob")) as channel:
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(Routes.ADMIN, StringValue())
        assert caught.value.code is StatusCode.PERMISSION_DENIED
    async with rig.connect(token=rig.token("root", scopes=["admin"])) as channel:
        assert (await channel.unary_unary(Routes.ADMIN, StringValue())).value == "admin ok"


@_bounded
async def test_auth_token_given_at_connect_authenticates_the_connection(rig: Rig) -> None:
    """The server knows the connection's principal, not only each call's."""
    if not rig.harness.supports_connection_auth:
        pytest.skip(f"{rig.harness.name} sends the token with every call (documented)")
    async with rig.connect(token=rig.token("dave")) as channel:
        await channel.unary_unary(Routes.ECHO, BytesValue())  # an open route: nothing checked
        [connection] = rig.server.connections
        await wait_until(lambda: connection.principal is not None)
        assert connection.principal is not None and connection.principal.subject == "dave"


@_bounded
async def test_auth_per_call_token(rig: Rig) -> None:
    async with rig.connect() as channel:
        metadata = {"authorization": f"Bearer {rig.token('carol')}"}
        reply = await channel.unary_unary(Routes.WHO_AM_I, StringValue(), metadata=metadata)
        assert reply.value == "carol"


@_bounded
async def test_push_reaches_client(rig: Rig) -> None:
    if not rig.harness.supports_push:
        pytest.skip(f"{rig.harness.name} has no server push (documented)")
    async with rig.connect() as channel:
        assert (await channel.unary_unary(Routes.PUSH_ME, Int64Value(value=3))).value == 3
        pushes = channel.pushes()
        received: list[Any] = []
        async with asyncio.timeout(10 * UNIT):
            async for push in pushes:
                received.append(push)
                if len(received) == 3:
                    break
        assert received == [StringValue(value=f"push {i}") for i in range(3)]


@_bounded
async def test_graceful_shutdown_loses_no_in_flight_call(rig: Rig) -> None:
    channel = await rig.channel()
    try:
        calls = [
            asyncio.ensure_future(
                channel.unary_unary(
                    Routes.ECHO, BytesValue(value=b"%d" % i), metadata={"x-sleep": "0.3"}
                )
            )
            for i in range(50)
        ]
        await wait_until(lambda: rig.service.started == 50)
        await rig.server.shutdown(grace=10 * UNIT)
        replies = await asyncio.gather(*calls)
        assert [reply.value for reply in replies] == [b"%d" % i for i in range(50)]
        assert rig.service.finished == 50
        # New calls are refused and new connections fail.
        with pytest.raises(RpcError) as caught:
            await channel.unary_unary(Routes.ECHO, BytesValue())
        assert caught.value.code is StatusCode.UNAVAILABLE
        with pytest.raises((ConnectionClosedError, RpcError, OSError)):
            fresh = await rig.channel(open_timeout=2 * UNIT)
            try:
                await fresh.unary_unary(Routes.ECHO, BytesValue(), timeout=2 * UNIT)
            finally:
                await fresh.close()
    finally:
        await channel.close()


@_bounded
async def test_slow_reader_is_back_pressured(rig: Rig) -> None:
    """A client that stops reading a stream stops the server's handler, not its memory."""
    async with rig.connect() as channel:
        call = channel.unary_stream(Routes.FLOOD, Int64Value(value=10_000))
        async for _ in call:
            break  # read one 64 KiB chunk, then stop reading
        await asyncio.sleep(0.5 * UNIT)
        sent_while_stalled = rig.service.flood_sent
        await asyncio.sleep(0.5 * UNIT)
        # Flow control stops the handler within a few windows: 10,000 chunks
        # (640 MiB) would otherwise be queued in server memory.
        assert rig.service.flood_sent == sent_while_stalled
        assert rig.service.flood_sent < 64
        call.cancel()
