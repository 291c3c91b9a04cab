"""`flare_runtime.reflection.schema`: fetching a server's schema and building routes from it.

In-process servers, real sockets. The command line over the same code: tests/runtime/cli/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from examples.chat.v1 import chat_pb2
from examples.chat.v1.chat_flare import CHAT_SERVICE
from flare.reflection.v1 import reflection_pb2
from google.protobuf import descriptor_pb2, empty_pb2, timestamp_pb2
from google.protobuf.descriptor import FileDescriptor

from examples.chat.service import ChatService
from flare_runtime.client import connect
from flare_runtime.reflection.schema import Schema, SchemaError, fetch_schema, split_method
from flare_runtime.routing import Cardinality, Transport
from flare_runtime.server import Server
from flare_runtime.testing.service import SERVICE, ConformanceService, Int64Value


@pytest.fixture
async def urls() -> AsyncIterator[dict[str, str]]:
    server = Server([ChatService(), (SERVICE, ConformanceService())])
    await server.start(websocket="127.0.0.1:0", grpc="127.0.0.1:0")
    try:
        yield {
            "ws": f"ws://127.0.0.1:{server.port('websocket')}",
            "grpc": f"grpc://127.0.0.1:{server.port('grpc')}",
        }
    finally:
        await server.shutdown(grace=0)


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
async def test_a_route_built_from_descriptors_calls_the_server(
    urls: dict[str, str], scheme: str
) -> None:
    url = urls[scheme]
    async with connect(url) as channel:
        schema = await fetch_schema(channel, url, symbols=[CHAT_SERVICE.name])
        route = schema.route("/examples.chat.v1.ChatService/Ping")
        generated = CHAT_SERVICE.routes[-1]
        assert (route.path, route.cardinality) == (generated.path, generated.cardinality)
        # Flare's ids travel on the wire transports; gRPC calls by path.
        ids = (1, 6) if scheme == "ws" else (0, 0)
        assert (route.service_id, route.route_id) == ids
        assert route.options.idempotent
        assert route.options.default_timeout == 1.5
        # Classes from the schema's own pool, not the generated ones.
        assert route.request_type is not empty_pb2.Empty
        assert route.request_type.DESCRIPTOR.full_name == "google.protobuf.Empty"
        reply = await channel.unary_unary(route, route.request_type())
        assert type(reply) is not timestamp_pb2.Timestamp
        assert reply.DESCRIPTOR.full_name == "google.protobuf.Timestamp"


async def test_a_table_built_by_hand_is_callable_through_reflection(urls: dict[str, str]) -> None:
    async with connect(urls["ws"]) as channel:
        schema = await fetch_schema(channel, urls["ws"], symbols=[f"{SERVICE.name}.Count"])
        route = schema.route(f"{SERVICE.name}.Count")
        assert route.cardinality is Cardinality.SERVER_STREAM
        request = route.request_type()
        request.ParseFromString(Int64Value(value=3).SerializeToString())
        replies = [reply async for reply in channel.unary_stream(route, request)]
    assert [Int64Value.FromString(reply.SerializeToString()).value for reply in replies] == [
        0,
        1,
        2,
    ]


async def test_push_types_are_listed_and_decodable(urls: dict[str, str]) -> None:
    async with connect(urls["ws"]) as channel:
        schema = await fetch_schema(channel, urls["ws"], push_types=True)
    table = schema.push_table()
    assert {push.type_id: push.message_type.DESCRIPTOR.full_name for push in table.types} == {
        1: "examples.chat.v1.MessagePosted",
        2: "examples.chat.v1.TypingChanged",
    }
    posted = table.by_id()[1]()
    posted.ParseFromString(
        chat_pb2.MessagePosted(message=chat_pb2.ChatMessage(text="hi")).SerializeToString()
    )
    assert schema.push_type_id(posted) == 1


async def test_a_route_not_on_a_transport_says_where_it_is(urls: dict[str, str]) -> None:
    async with connect(urls["ws"]) as channel:
        schema = await fetch_schema(channel, urls["ws"], symbols=["flare.reflection.v1.Reflection"])
    route = schema.route("/flare.reflection.v1.Reflection/ListServices")
    assert route.options.transports == {Transport.WEBSOCKET, Transport.QUIC}


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
async def test_unknown_symbols_and_methods(urls: dict[str, str], scheme: str) -> None:
    url = urls[scheme]
    async with connect(url) as channel:
        with pytest.raises(SchemaError, match="serves no symbol"):
            await fetch_schema(channel, url, symbols=["examples.chat.v1.Nope"])
        schema = await fetch_schema(channel, url, symbols=[CHAT_SERVICE.name])
    with pytest.raises(SchemaError, match="has no method Nope"):
        schema.route("/examples.chat.v1.ChatService/Nope")
    with pytest.raises(SchemaError, match="serves no service"):
        schema.route("/examples.chat.v1.Other/Ping")


async def test_a_grpc_server_without_reflection_is_said_so_every_time() -> None:
    """grpcio fails a write to a bidi call of a method the server lacks with INTERNAL about
    one time in eight (grpcio issue 36066): asked one question per call, the answer is
    always that there is no reflection."""
    server = Server([ChatService()], reflection=False)
    await server.start(grpc="127.0.0.1:0")
    url = f"grpc://127.0.0.1:{server.port('grpc')}"
    try:
        for _ in range(30):
            async with connect(url) as channel:
                with pytest.raises(SchemaError, match="serves no gRPC reflection"):
                    await fetch_schema(channel, url, symbols=[CHAT_SERVICE.name])
    finally:
        await server.shutdown(grace=0)


def test_files_are_added_imports_first_whatever_order_they_come_in() -> None:
    schema = Schema(listing=_empty_listing())
    files = [chat_pb2.DESCRIPTOR.serialized_pb]
    for dependency in chat_pb2.DESCRIPTOR.dependencies:
        _add_with_imports(dependency, files)
    schema.add_files(files)  # the importer first: added after what it imports
    assert schema.pool.FindMessageTypeByName("examples.chat.v1.ChatMessage")
    schema.add_files(files)  # again: nothing to do, no conflict


def test_a_file_importing_one_never_sent_is_refused() -> None:
    schema = Schema(listing=_empty_listing())
    with pytest.raises(SchemaError, match=r"imports flare/options/v1/options\.proto, which it"):
        schema.add_files([chat_pb2.DESCRIPTOR.serialized_pb])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("/pkg.S/M", ("pkg.S", "M")),
        ("pkg.S/M", ("pkg.S", "M")),
        ("pkg.v1.S.M", ("pkg.v1.S", "M")),
    ],
)
def test_method_names(name: str, expected: tuple[str, str]) -> None:
    assert split_method(name) == expected


@pytest.mark.parametrize("name", ["M", "/", "a/b/c"])
def test_what_names_no_method(name: str) -> None:
    with pytest.raises(SchemaError, match="is not a method name"):
        split_method(name)


def _empty_listing() -> reflection_pb2.ListServicesReply:
    return reflection_pb2.ListServicesReply()


def _add_with_imports(file: FileDescriptor, into: list[bytes]) -> None:
    for dependency in file.dependencies:
        _add_with_imports(dependency, into)
    data = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(data)
    serialized = data.SerializeToString()
    if serialized not in into:
        into.append(serialized)
