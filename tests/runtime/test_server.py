"""`Server`: how services are added, addresses parsed, misuse reported."""

from __future__ import annotations

import pytest
from examples.chat.v1 import chat_pb2
from examples.chat.v1.chat_flare import (
    CHAT_ADMIN_SERVICE,
    CHAT_SERVICE,
    ChatAdminServiceBase,
    register_chat_service,
)
from google.protobuf import empty_pb2

from examples.chat.service import ChatService
from flare_runtime.client import connect
from flare_runtime.context import CallContext
from flare_runtime.errors import ConfigurationError
from flare_runtime.routing import Router
from flare_runtime.server import Server, parse_address
from flare_runtime.testing.service import SERVICE, BytesValue, ConformanceService, Routes


def test_handler_object_finds_its_generated_routes_and_push_types() -> None:
    server = Server([ChatService()])
    assert CHAT_SERVICE.name in server.router.services
    assert server.router.push_type_id(chat_pb2.MessagePosted()) == 1


def test_a_handler_implementing_two_generated_bases_serves_both() -> None:
    class ChatWithAdmin(ChatService, ChatAdminServiceBase):
        async def purge(
            self, request: chat_pb2.PurgeRequest, context: CallContext
        ) -> empty_pb2.Empty:
            return empty_pb2.Empty()

    server = Server([ChatWithAdmin()], reflection=False)
    assert set(server.router.services) == {CHAT_SERVICE.name, CHAT_ADMIN_SERVICE.name}
    assert ChatWithAdmin.__flare_service__ is CHAT_SERVICE  # the first base in the MRO


def test_register_function_and_pairs() -> None:
    server = Server(
        [
            lambda router: register_chat_service(router, ChatService()),
            (SERVICE, ConformanceService()),
        ],
        reflection=False,
    )
    assert set(server.router.services) == {CHAT_SERVICE.name, SERVICE.name}


def test_misuse_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Server([object()])
    with pytest.raises(ConfigurationError):
        Server([(SERVICE, ConformanceService()), (SERVICE, ConformanceService())])
    server = Server([(SERVICE, ConformanceService())])
    with pytest.raises(ConfigurationError):
        server.port("websocket")


async def test_start_needs_an_address_and_freezes_services() -> None:
    server = Server([(SERVICE, ConformanceService())])
    with pytest.raises(ConfigurationError):
        await server.start()
    await server.start(websocket="127.0.0.1:0")
    try:
        with pytest.raises(ConfigurationError):
            server.add(lambda router: None)
        with pytest.raises(ConfigurationError):
            await server.start(websocket="127.0.0.1:0")  # already served
    finally:
        await server.shutdown(grace=0)


async def test_listen_names_any_registered_transport_and_the_keywords_stay() -> None:
    server = Server([(SERVICE, ConformanceService())])
    await server.start(listen={"websocket": "127.0.0.1:0"}, grpc="127.0.0.1:0")
    try:
        async with connect(f"ws://127.0.0.1:{server.port('websocket')}") as channel:
            assert (await channel.unary_unary(Routes.ECHO, BytesValue(value=b"l"))).value == b"l"
        assert server.port("grpc") > 0
        with pytest.raises(ConfigurationError) as caught:
            await server.start(listen={"grpc": "127.0.0.1:0"})
        assert str(caught.value) == "grpc is already being served"
    finally:
        await server.shutdown(grace=0)


async def test_listen_misuse_fails_before_anything_is_bound() -> None:
    server = Server([(SERVICE, ConformanceService())])
    with pytest.raises(ConfigurationError) as caught:
        await server.start(websocket="127.0.0.1:0", listen={"tpc": "127.0.0.1:0"})
    assert str(caught.value).startswith("unknown transport 'tpc': known transports are ")
    assert "grpc, quic" in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        await server.start(websocket="127.0.0.1:0", listen={"websocket": "127.0.0.1:0"})
    assert str(caught.value) == "websocket is given twice: as websocket= and in listen="
    with pytest.raises(ConfigurationError):
        server.port("websocket")  # nothing was started


def test_parse_address() -> None:
    assert parse_address(":8080") == ("0.0.0.0", 8080)
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:9") == ("::1", 9)
    for bad in ("8080", "host:", "host:99999", "host:x"):
        with pytest.raises(ConfigurationError):
            parse_address(bad)


def test_router_is_shared_by_the_dispatcher() -> None:
    server = Server([(SERVICE, ConformanceService())])
    assert isinstance(server.router, Router)
    assert server.dispatcher.router is server.router
