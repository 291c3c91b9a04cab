"""`ReflectionService` (flare.reflection.v1) and gRPC's reflection, served by a real `Server`.

Calls go over real sockets; gRPC's v1 reflection is asked by a stock grpcio client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from examples.chat.v1 import chat_pb2
from examples.chat.v1.chat_flare import CHAT_SERVICE
from flare.options.v1 import options_pb2
from flare.reflection.v1 import reflection_pb2
from flare.reflection.v1.reflection_flare import ReflectionClient
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from examples.chat.service import ChatService
from flare_runtime.client import connect
from flare_runtime.errors import RpcError
from flare_runtime.reflection.service import MAX_SYMBOLS
from flare_runtime.server import Server
from flare_runtime.status import StatusCode
from flare_runtime.testing.service import SERVICE, ConformanceService


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    served = Server([ChatService(), (SERVICE, ConformanceService())])
    await served.start(websocket="127.0.0.1:0", grpc="127.0.0.1:0")
    try:
        yield served
    finally:
        await served.shutdown(grace=0)


@pytest.fixture
async def reflection(server: Server) -> AsyncIterator[ReflectionClient]:
    async with connect(f"ws://127.0.0.1:{server.port('websocket')}") as channel:
        yield ReflectionClient(channel)


def _names(reply: reflection_pb2.GetFilesReply) -> list[str]:
    return [
        descriptor_pb2.FileDescriptorProto.FromString(data).name
        for data in reply.file_descriptor_protos
    ]


async def test_list_services_is_the_servers_own_table(reflection: ReflectionClient) -> None:
    reply = await reflection.list_services(reflection_pb2.ListServicesRequest())
    names = [service.name for service in reply.services]
    assert names == sorted([CHAT_SERVICE.name, SERVICE.name, "flare.reflection.v1.Reflection"])
    chat = reply.services[names.index(CHAT_SERVICE.name)]
    assert chat.service_id == CHAT_SERVICE.service_id
    assert [(route.method, route.route_id) for route in chat.routes] == [
        (route.path.rsplit("/", 1)[1], route.route_id) for route in CHAT_SERVICE.routes
    ]
    everywhere = [
        options_pb2.TRANSPORT_WEBSOCKET,
        options_pb2.TRANSPORT_QUIC,
        options_pb2.TRANSPORT_GRPC,
    ]
    assert list(chat.routes[0].transports) == everywhere
    own = reply.services[names.index("flare.reflection.v1.Reflection")]
    assert (own.service_id, list(own.routes[0].transports)) == (65280, everywhere[:2])
    assert [(push.type_id, push.message) for push in reply.push_types] == [
        (1, "examples.chat.v1.MessagePosted"),
        (2, "examples.chat.v1.TypingChanged"),
    ]


async def test_get_files_sends_a_symbols_file_after_everything_it_imports(
    reflection: ReflectionClient,
) -> None:
    reply = await reflection.get_files(
        reflection_pb2.GetFilesRequest(symbols=["examples.chat.v1.ChatService.Send"])
    )
    names = _names(reply)
    assert names[-1] == "examples/chat/v1/chat.proto"
    assert set(names[:-1]) == {
        "flare/options/v1/options.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/empty.proto",
        "google/protobuf/timestamp.proto",
    }
    assert names.index("google/protobuf/descriptor.proto") < names.index(
        "flare/options/v1/options.proto"
    )
    # The bytes are the generated module's own descriptor: Flare's options included.
    assert reply.file_descriptor_protos[-1] == chat_pb2.DESCRIPTOR.serialized_pb


async def test_a_table_built_by_hand_is_described_from_its_routes(
    reflection: ReflectionClient,
) -> None:
    reply = await reflection.get_files(reflection_pb2.GetFilesRequest(symbols=[SERVICE.name]))
    declared = descriptor_pb2.FileDescriptorProto.FromString(reply.file_descriptor_protos[-1])
    assert _names(reply)[:-1] == ["google/protobuf/wrappers.proto"]
    (service,) = declared.service
    assert [method.name for method in service.method] == [
        route.path.rsplit("/", 1)[1] for route in SERVICE.routes
    ]
    by_name = {method.name: method for method in service.method}
    for route in SERVICE.routes:
        method = by_name[route.path.rsplit("/", 1)[1]]
        assert method.input_type == f".{route.request_type.DESCRIPTOR.full_name}"
        assert method.client_streaming == route.cardinality.client_streams
        assert method.server_streaming == route.cardinality.server_streams


@pytest.mark.parametrize(
    "symbol",
    ["examples.chat.v1.Nope", "flare.im.v1.ImService", "google.protobuf.Any", ""],
)
async def test_a_symbol_the_server_does_not_serve_is_not_found(
    reflection: ReflectionClient, symbol: str
) -> None:
    """Only what is served is described, even when it is in the same descriptor pool."""
    import flare.im.v1.im_pb2  # noqa: F401 -- in the default pool, not served

    with pytest.raises(RpcError) as caught:
        await reflection.get_files(reflection_pb2.GetFilesRequest(symbols=[symbol]))
    assert caught.value.code is StatusCode.NOT_FOUND
    assert repr(symbol) in caught.value.message


@pytest.mark.parametrize("count", [0, MAX_SYMBOLS + 1])
async def test_no_symbols_or_too_many_is_invalid(reflection: ReflectionClient, count: int) -> None:
    request = reflection_pb2.GetFilesRequest(symbols=[CHAT_SERVICE.name] * count)
    with pytest.raises(RpcError) as caught:
        await reflection.get_files(request)
    assert caught.value.code is StatusCode.INVALID_ARGUMENT


async def test_reflection_false_serves_none() -> None:
    server = Server([ChatService()], reflection=False)
    await server.start(websocket="127.0.0.1:0", grpc="127.0.0.1:0")
    try:
        async with connect(f"ws://127.0.0.1:{server.port('websocket')}") as channel:
            with pytest.raises(RpcError) as caught:
                await ReflectionClient(channel).list_services(reflection_pb2.ListServicesRequest())
        assert caught.value.code is StatusCode.UNIMPLEMENTED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port('grpc')}") as channel:
            for version in ("v1", "v1alpha"):
                ask = channel.stream_stream(
                    f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                    request_serializer=bytes,
                    response_deserializer=bytes,
                )
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    async for _ in ask(iter([b""])):
                        pass
                assert failed.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.shutdown(grace=0)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_grpc_reflection_v1_and_v1alpha_answer_a_stock_client(
    server: Server, version: str
) -> None:
    pool = descriptor_pool.Default()
    # Built from the v1/v1alpha descriptors in the pool: typed loosely, as a dynamic client is.
    request_type: Any = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"grpc.reflection.{version}.ServerReflectionRequest")
    )
    response_type: Any = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"grpc.reflection.{version}.ServerReflectionResponse")
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port('grpc')}") as channel:
        ask = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        questions = [
            request_type(list_services=""),
            request_type(file_containing_symbol=f"grpc.reflection.{version}.ServerReflection"),
        ]
        answers: list[Any] = [answer async for answer in ask(iter(questions))]
    listed = [service.name for service in answers[0].list_services_response.service]
    assert CHAT_SERVICE.name in listed
    assert "grpc.reflection.v1.ServerReflection" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed
    assert "flare.reflection.v1.Reflection" not in listed  # not served on gRPC
    (data,) = answers[1].file_descriptor_response.file_descriptor_proto
    file = descriptor_pb2.FileDescriptorProto.FromString(data)
    assert file.package == f"grpc.reflection.{version}"
    assert file.service[0].method[0].input_type == (
        f".grpc.reflection.{version}.ServerReflectionRequest"
    )
