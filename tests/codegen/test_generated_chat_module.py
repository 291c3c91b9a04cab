"""The checked-in example output behaves as its contract says (and type-checks, under mypy).

`generated/examples/chat/v1/chat_flare.py` is what the runtime and IM code
build on: routes with resolved options, a handler base, a registration
function and the push table. This file is also the positive typing test: a
complete, correctly typed implementation that ``mypy --strict`` accepts.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import pytest
from examples.chat.v1 import chat_flare, chat_pb2
from google.protobuf import empty_pb2, timestamp_pb2

from flare_runtime.context import CallContext
from flare_runtime.errors import ConfigurationError
from flare_runtime.routing import (
    ALL_TRANSPORTS,
    AuthRequirement,
    Cardinality,
    Route,
    Router,
    Transport,
)


class ChatImplementation(chat_flare.ChatServiceBase):
    async def send(self, request: chat_pb2.SendRequest, context: CallContext) -> chat_pb2.SendReply:
        return chat_pb2.SendReply(message_id=request.client_message_id, seq=1)

    async def subscribe(
        self, request: chat_pb2.SubscribeRequest, context: CallContext
    ) -> AsyncIterator[chat_pb2.RoomEvent]:
        for seq in range(request.after_seq + 1, request.after_seq + 3):
            message = chat_pb2.ChatMessage(room=request.room, seq=seq)
            yield chat_pb2.RoomEvent(posted=chat_pb2.MessagePosted(message=message))

    async def upload(
        self, requests: AsyncIterator[chat_pb2.UploadChunk], context: CallContext
    ) -> chat_pb2.UploadReply:
        size = 0
        async for chunk in requests:
            size += len(chunk.data)
        return chat_pb2.UploadReply(size=size)

    async def chat(
        self, requests: AsyncIterator[chat_pb2.ChatMessage], context: CallContext
    ) -> AsyncIterator[chat_pb2.ChatMessage]:
        async for message in requests:
            yield chat_pb2.ChatMessage(text=message.text.upper())

    async def history(
        self, request: chat_pb2.HistoryRequest, context: CallContext
    ) -> chat_pb2.HistoryReply:
        return chat_pb2.HistoryReply()

    async def ping(self, request: empty_pb2.Empty, context: CallContext) -> timestamp_pb2.Timestamp:
        return timestamp_pb2.Timestamp(seconds=1)


def _context(route: Route[chat_pb2.SendRequest, chat_pb2.SendReply]) -> CallContext:
    return CallContext(route=route, transport=Transport.WEBSOCKET)


def test_routes_carry_ids_types_and_resolved_options() -> None:
    routes = chat_flare.ChatServiceRoutes
    assert routes.SEND.path == "/examples.chat.v1.ChatService/Send"
    assert routes.SEND.wire_id == 1 << 16 | 1
    assert routes.SEND.request_type is chat_pb2.SendRequest
    assert routes.SEND.response_type is chat_pb2.SendReply
    assert routes.SEND.options.idempotent
    assert routes.SEND.options.auth is AuthRequirement.AUTHENTICATED
    assert routes.SEND.options.scopes == ("chat.write",)  # the method's own scopes win
    assert routes.SEND.options.default_timeout == 5.0
    assert routes.SUBSCRIBE.options.scopes == ("chat",)  # the service default
    assert routes.UPLOAD.options.transports == set(Transport)
    assert chat_flare.ChatAdminServiceRoutes.PURGE.options.transports == {Transport.GRPC}
    assert routes.UPLOAD.options.max_message_bytes == 1048576
    assert routes.HISTORY.options.deprecated
    assert routes.HISTORY.options.deprecation_note == "use Subscribe with after_seq instead"
    assert routes.PING.options.auth is AuthRequirement.NONE
    assert routes.PING.options.scopes == ()
    assert routes.PING.options.default_timeout == 1.5
    assert [route.cardinality for route in chat_flare.CHAT_SERVICE.routes[:4]] == [
        Cardinality.UNARY,
        Cardinality.SERVER_STREAM,
        Cardinality.CLIENT_STREAM,
        Cardinality.BIDI_STREAM,
    ]
    assert chat_flare.CHAT_SERVICE.reserved_route_ids == ((10, 12),)
    assert routes.SEND.options.transports == ALL_TRANSPORTS


def test_service_without_flare_ids_is_grpc_only() -> None:
    (purge,) = chat_flare.CHAT_ADMIN_SERVICE.routes
    assert chat_flare.CHAT_ADMIN_SERVICE.service_id == 0
    assert purge.wire_id == 0
    assert purge.options.transports == {Transport.GRPC}


def test_handler_base_shapes_match_cardinalities() -> None:
    base = chat_flare.ChatServiceBase
    assert inspect.iscoroutinefunction(base.send)
    assert inspect.iscoroutinefunction(base.upload)
    assert not inspect.iscoroutinefunction(base.subscribe)  # implemented as async generators
    assert not inspect.iscoroutinefunction(base.chat)
    assert base.__abstractmethods__ == {"send", "subscribe", "upload", "chat", "history", "ping"}
    assert "Post a message to a room." in (base.send.__doc__ or "")


async def test_registration_binds_every_route_and_the_push_types() -> None:
    router = Router()
    implementation = ChatImplementation()
    chat_flare.register_chat_service(router, implementation)

    bound = router.by_wire_id(chat_flare.ChatServiceRoutes.SEND.wire_id)
    assert bound is not None
    assert bound.handler == implementation.send
    assert router.by_path("/examples.chat.v1.ChatService/Chat") is not None
    reply = await bound.handler(chat_pb2.SendRequest(client_message_id="c1"), _context(bound.route))
    assert reply == chat_pb2.SendReply(message_id="c1", seq=1)

    events = [
        event.posted.message.seq
        async for event in implementation.subscribe(
            chat_pb2.SubscribeRequest(room="r", after_seq=4), _context(bound.route)
        )
    ]
    assert events == [5, 6]

    assert router.push_type(1) is chat_pb2.MessagePosted
    assert router.push_type_id(chat_pb2.TypingChanged()) == 2
    with pytest.raises(ConfigurationError, match="already registered"):
        chat_flare.register_chat_service(router, implementation)


def test_deprecated_handler_is_marked() -> None:
    deprecated = getattr(chat_flare.ChatServiceBase.history, "__deprecated__", None)
    assert deprecated == "use Subscribe with after_seq instead"
    assert getattr(chat_flare.ChatServiceClient.history, "__deprecated__", None) == deprecated
