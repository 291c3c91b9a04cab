"""`Dispatcher` without any transport: auth, interceptors and error mapping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from google.protobuf.message import Message

from flare_runtime.auth import Principal, TokenAuth
from flare_runtime.context import CallContext
from flare_runtime.dispatch import ConnectionAuth, Dispatcher, to_rpc_error
from flare_runtime.errors import RpcError
from flare_runtime.interceptors import ServerInterceptor, StreamCallNext, UnaryCallNext
from flare_runtime.metadata import Metadata
from flare_runtime.routing import BoundRoute, RouteOptions, Router, Transport
from flare_runtime.status import StatusCode
from flare_runtime.testing.service import (
    SERVICE,
    BytesValue,
    ConformanceService,
    Int64Value,
    Routes,
    StringValue,
)


def _dispatcher(**kwargs: Any) -> tuple[Dispatcher, ConformanceService]:
    router = Router()
    service = ConformanceService()
    router.add_service(SERVICE, service)
    return Dispatcher(router, **kwargs), service


def _bound(dispatcher: Dispatcher, path: str) -> BoundRoute:
    bound = dispatcher.router.by_path(path)
    assert bound is not None
    return bound


def _context(bound: BoundRoute, metadata: dict[str, str] | None = None) -> CallContext:
    return CallContext(
        route=bound.route, metadata=Metadata(metadata), peer="test", transport=Transport.WEBSOCKET
    )


async def _requests(*values: int) -> AsyncIterator[Message]:
    for value in values:
        yield Int64Value(value=value)


async def test_unary_and_error_mapping(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher, _ = _dispatcher()
    bound = _bound(dispatcher, Routes.ECHO.path)
    reply = await dispatcher.unary(bound, BytesValue(value=b"a"), _context(bound))
    assert reply == BytesValue(value=b"a")
    with pytest.raises(RpcError) as caught:
        await dispatcher.unary(bound, BytesValue(), _context(bound, {"x-fail-code": "6"}))
    assert caught.value.code is StatusCode.ALREADY_EXISTS
    with (
        caplog.at_level(logging.ERROR, logger="flare_runtime.server"),
        pytest.raises(RpcError) as caught,
    ):
        await dispatcher.unary(bound, BytesValue(), _context(bound, {"x-crash": "1"}))
    assert caught.value.code is StatusCode.INTERNAL
    assert caught.value.message == "internal error"
    assert "do-not-leak-this-secret" in caplog.text  # logged server-side, not sent


def test_to_rpc_error_table() -> None:
    assert to_rpc_error(TimeoutError()).code is StatusCode.DEADLINE_EXCEEDED
    assert to_rpc_error(NotImplementedError()).code is StatusCode.UNIMPLEMENTED
    original = RpcError(StatusCode.ABORTED, "x")
    assert to_rpc_error(original) is original


async def test_streams_map_errors_raised_mid_stream() -> None:
    dispatcher, _ = _dispatcher()
    bound = _bound(dispatcher, Routes.COUNT.path)
    replies = dispatcher.server_stream(bound, Int64Value(value=3), _context(bound))
    assert [reply.value async for reply in replies] == [0, 1, 2]  # type: ignore[attr-defined]
    failing = dispatcher.server_stream(
        bound, Int64Value(value=3), _context(bound, {"x-fail-code": "11"})
    )
    with pytest.raises(RpcError) as caught:
        async for _ in failing:
            pass
    assert caught.value.code is StatusCode.OUT_OF_RANGE
    summing = _bound(dispatcher, Routes.SUM.path)
    total = await dispatcher.client_stream(summing, _requests(1, 2, 3), _context(summing))
    assert total == Int64Value(value=6)


async def test_auth_requirements() -> None:
    alice = Principal("alice")
    root = Principal("root", scopes=frozenset({"admin"}))
    dispatcher, _ = _dispatcher(auth=TokenAuth({"a": alice, "r": root}))
    who = _bound(dispatcher, Routes.WHO_AM_I.path)
    admin = _bound(dispatcher, Routes.ADMIN.path)
    request = StringValue()

    with pytest.raises(RpcError) as caught:
        await dispatcher.unary(who, request, _context(who))
    assert caught.value.code is StatusCode.UNAUTHENTICATED

    rejected = ConnectionAuth(error=RpcError(StatusCode.UNAUTHENTICATED, "token expired"))
    with pytest.raises(RpcError) as caught:
        await dispatcher.unary(who, request, _context(who), rejected)
    assert caught.value.message == "token expired"

    reply = await dispatcher.unary(who, request, _context(who), ConnectionAuth(principal=alice))
    assert reply == StringValue(value="alice")

    with pytest.raises(RpcError) as caught:
        await dispatcher.unary(admin, request, _context(admin), ConnectionAuth(principal=alice))
    assert caught.value.code is StatusCode.PERMISSION_DENIED

    # Per-call credentials override the connection's.
    per_call = _context(admin, {"authorization": "Bearer r"})
    reply = await dispatcher.unary(admin, request, per_call, ConnectionAuth(principal=alice))
    assert reply == StringValue(value="admin ok")
    bad = _context(who, {"authorization": "Bearer nope"})
    with pytest.raises(RpcError) as caught:
        await dispatcher.unary(who, request, bad, ConnectionAuth(principal=alice))
    assert caught.value.code is StatusCode.UNAUTHENTICATED


async def test_authenticate_connection_never_raises() -> None:
    dispatcher, _ = _dispatcher(auth=TokenAuth({"a": Principal("alice")}))
    good = await dispatcher.authenticate_connection(Metadata({"authorization": "Bearer a"}), "p")
    assert good.principal == Principal("alice")
    bad = await dispatcher.authenticate_connection(Metadata({"authorization": "Bearer b"}), "p")
    assert bad.principal is None
    assert bad.error is not None
    assert bad.error.code is StatusCode.UNAUTHENTICATED
    anonymous = await dispatcher.authenticate_connection(Metadata(), "p")
    assert anonymous.principal is None
    assert anonymous.error is None


class _Refuse(ServerInterceptor):
    async def intercept_unary(
        self, request: Message, context: CallContext, call_next: UnaryCallNext
    ) -> Message:
        raise RpcError(StatusCode.RESOURCE_EXHAUSTED, "slow down")


class _Double(ServerInterceptor):
    def intercept_stream(
        self, requests: AsyncIterator[Message], context: CallContext, call_next: StreamCallNext
    ) -> AsyncIterator[Message]:
        return self._double(requests, context, call_next)

    async def _double(
        self, requests: AsyncIterator[Message], context: CallContext, call_next: StreamCallNext
    ) -> AsyncIterator[Message]:
        async for response in call_next(requests, context):
            yield response
            yield response


async def test_interceptors_can_refuse_and_rewrite() -> None:
    dispatcher, service = _dispatcher(interceptors=[_Refuse(), _Double()])
    echo = _bound(dispatcher, Routes.ECHO.path)
    with pytest.raises(RpcError) as caught:
        await dispatcher.unary(echo, BytesValue(), _context(echo))
    assert caught.value.code is StatusCode.RESOURCE_EXHAUSTED
    assert service.started == 0  # refused before the handler ran
    count = _bound(dispatcher, Routes.COUNT.path)
    replies = dispatcher.server_stream(count, Int64Value(value=2), _context(count))
    assert [reply.value async for reply in replies] == [0, 0, 1, 1]  # type: ignore[attr-defined]
    # A client-stream call whose chain yields two responses is an INTERNAL error.
    summing = _bound(dispatcher, Routes.SUM.path)
    with pytest.raises(RpcError) as caught:
        await dispatcher.client_stream(summing, _requests(1), _context(summing))
    assert caught.value.code is StatusCode.INTERNAL


def test_unknown_route_error_names_the_wire_id() -> None:
    error = Dispatcher.unknown_route_error(0x7F00 << 16 | 99)
    assert error.code is StatusCode.UNIMPLEMENTED
    assert "32512:99" in error.message


async def test_unary_authenticates_per_call_credentials_on_an_open_route() -> None:
    """An open route runs its handler directly, unless the call brings its own credentials."""
    dispatcher, _ = _dispatcher(auth=TokenAuth({"a": Principal("alice")}))
    echo = _bound(dispatcher, Routes.ECHO.path)
    context = _context(echo)
    assert await dispatcher.unary(echo, BytesValue(value=b"x"), context) == BytesValue(value=b"x")
    assert context.principal is None
    context = _context(echo, {"authorization": "Bearer a"})
    await dispatcher.unary(echo, BytesValue(), context)
    assert context.principal == Principal("alice")
    context = _context(echo, {"authorization": "Bearer b"})  # rejected, but the route is open
    await dispatcher.unary(echo, BytesValue(), context)
    assert context.principal is None


async def test_unary_takes_the_principal_of_the_connection() -> None:
    dispatcher, _ = _dispatcher(auth=TokenAuth({"a": Principal("alice")}))
    who = _bound(dispatcher, Routes.WHO_AM_I.path)
    with pytest.raises(RpcError) as caught:
        await dispatcher.unary(who, StringValue(), _context(who), ConnectionAuth())
    assert caught.value.code is StatusCode.UNAUTHENTICATED
    alice = ConnectionAuth(principal=Principal("alice"))
    reply = await dispatcher.unary(who, StringValue(), _context(who), alice)
    assert reply == StringValue(value="alice")


def test_wire_routes_apply_each_routes_transports_option() -> None:
    grpc_only = replace(Routes.ECHO, options=RouteOptions(transports=frozenset({Transport.GRPC})))
    service = replace(SERVICE, routes=(grpc_only, Routes.COUNT))
    router = Router()
    router.add_service(service, ConformanceService())
    dispatcher = Dispatcher(router)
    websocket = dispatcher.wire_routes(Transport.WEBSOCKET)
    assert set(websocket) == {Routes.COUNT.wire_id}
    assert dispatcher.wire_routes(Transport.WEBSOCKET) is websocket  # built once
    assert set(dispatcher.wire_routes(Transport.QUIC)) == {Routes.COUNT.wire_id}
    assert [bound.route.path for bound in dispatcher.routes(Transport.GRPC)] == [
        Routes.ECHO.path,
        Routes.COUNT.path,
    ]


async def test_a_streaming_route_called_as_unary_fails_internal() -> None:
    dispatcher, _ = _dispatcher()
    count = _bound(dispatcher, Routes.COUNT.path)
    with pytest.raises(RpcError) as caught:
        await dispatcher.unary(count, Int64Value(value=1), _context(count))
    assert caught.value.code is StatusCode.INTERNAL


async def test_served_routes_share_the_dispatchers_unary_runner() -> None:
    dispatcher, _ = _dispatcher(interceptors=[_Refuse()])
    served = dispatcher.wire_routes(Transport.QUIC)[Routes.ECHO.wire_id]
    with pytest.raises(RpcError) as caught:  # the interceptor runs on this path too
        await served.unary(BytesValue(), _context(served), None)
    assert caught.value.code is StatusCode.RESOURCE_EXHAUSTED
