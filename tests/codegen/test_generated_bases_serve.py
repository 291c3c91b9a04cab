"""Every generated handler base is servable: ``Server([instance])`` whatever the service is called.

Each golden case (`cases/*/proto`) is generated with ``flare gen``; every
service of every case is implemented by a subclass of its generated base (one
handler per route, recording the call), all are served by one `Server` over
WebSocket and gRPC on real sockets, and one route of each service is called:
over WebSocket when the route has a wire id and is served there, else over
gRPC (a service without Flare ids, like googleapis', is gRPC-only).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import sysconfig
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

import flare_runtime as flare
from flare_codegen.generate import generate
from flare_runtime.routing import Cardinality, Route, ServiceRoutes, Transport

CASES = Path(__file__).resolve().parent / "cases"
CASE_NAMES = sorted(path.name for path in CASES.iterdir() if (path / "proto").is_dir())
TOKEN = "generated-bases"


@pytest.fixture(scope="module")
def generated_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ModuleType]]:
    """Every case's ``_flare`` module, generated into one root and imported."""
    out = tmp_path_factory.mktemp("bases")
    for case in CASE_NAMES:
        generate(CASES / case / "proto", out, mypy=False)
    sys.path.insert(0, str(out))
    before = set(sys.modules)
    try:
        yield [
            importlib.import_module(".".join(path.relative_to(out).with_suffix("").parts))
            for path in sorted(out.rglob("*_flare.py"))
        ]
    finally:
        sys.path.remove(str(out))
        for name in set(sys.modules) - before:
            del sys.modules[name]


def _sample(message: Message) -> Message:
    """`message` with every required field (proto2) set, so it can be serialized."""
    for field in message.DESCRIPTOR.fields:
        if not getattr(field, "is_required", False):
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            _sample(getattr(message, field.name))
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            setattr(message, field.name, "x" if field.type == FieldDescriptor.TYPE_STRING else b"x")
        else:
            setattr(message, field.name, 1)
    return message


def _new(message_type: type[Message]) -> Message:
    return _sample(message_type())


def _handler(route: Route[Any, Any], calls: list[str]) -> Callable[..., Any]:
    """A handler of `route`'s cardinality that records the call and answers one response."""

    def record() -> Message:
        calls.append(route.path)
        return _new(route.response_type)

    if route.cardinality is Cardinality.UNARY:

        async def unary(self: object, request: Message, context: flare.CallContext) -> Message:
            return record()

        return unary
    if route.cardinality is Cardinality.SERVER_STREAM:

        async def server_stream(
            self: object, request: Message, context: flare.CallContext
        ) -> AsyncIterator[Message]:
            yield record()

        return server_stream
    if route.cardinality is Cardinality.CLIENT_STREAM:

        async def client_stream(
            self: object, requests: AsyncIterator[Message], context: flare.CallContext
        ) -> Message:
            async for _ in requests:
                pass
            return record()

        return client_stream

    async def bidi_stream(
        self: object, requests: AsyncIterator[Message], context: flare.CallContext
    ) -> AsyncIterator[Message]:
        async for _ in requests:
            yield record()

    return bidi_stream


def _bases(modules: list[ModuleType]) -> list[type]:
    """Every generated handler base: the classes declaring ``__flare_service__``."""
    return [
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type) and "__flare_service__" in vars(value)
    ]


def _implementation(base: type, calls: list[str]) -> object:
    table: ServiceRoutes = vars(base)["__flare_service__"]
    methods = {route.handler_name: _handler(route, calls) for route in table.routes}
    return type(f"{base.__name__}Impl", (base,), methods)()


async def _call_one(channel: flare.Channel, route: Route[Any, Any]) -> None:
    request = _new(route.request_type)
    if route.cardinality is Cardinality.UNARY:
        await channel.unary_unary(route, request, timeout=10)
    elif route.cardinality is Cardinality.SERVER_STREAM:
        assert len([reply async for reply in channel.unary_stream(route, request, timeout=10)]) == 1
    elif route.cardinality is Cardinality.CLIENT_STREAM:
        await channel.stream_unary(route, [request], timeout=10)
    else:
        replies = [reply async for reply in channel.stream_stream(route, [request], timeout=10)]
        assert len(replies) == 1


def _on_websocket(route: Route[Any, Any]) -> bool:
    return bool(route.wire_id) and Transport.WEBSOCKET in route.options.transports


async def test_every_generated_base_is_served_from_an_instance(
    generated_modules: list[ModuleType],
) -> None:
    bases = _bases(generated_modules)
    names = {base.__name__ for base in bases}
    # Services named without a "Service" suffix are the ones name-guessing missed.
    assert {"LedgerBase", "EchoBase", "ClockBase", "ServiceBase", "classBase"} <= names
    calls: list[str] = []
    implementations = [_implementation(base, calls) for base in bases]
    tables: list[ServiceRoutes] = [vars(base)["__flare_service__"] for base in bases]
    routes = [route for table in tables for route in table.routes]
    scopes = frozenset(scope for route in routes for scope in route.options.scopes)
    server = flare.Server(
        implementations,
        auth=flare.TokenAuth({TOKEN: flare.Principal("tester", scopes)}),
    )
    reflection = "flare.reflection.v1.Reflection"
    assert set(server.router.services) == {reflection, *(table.name for table in tables)}
    for module in generated_modules:
        for push in module.PUSH_TYPES.types:
            assert server.router.push_type(push.type_id) is push.message_type

    await server.start(websocket="127.0.0.1:0", grpc="127.0.0.1:0")
    called: list[str] = []
    try:
        ws_url = f"ws://127.0.0.1:{server.port('websocket')}"
        grpc_url = f"grpc://127.0.0.1:{server.port('grpc')}"
        async with (
            flare.connect(ws_url, token=TOKEN) as websocket,
            flare.connect(grpc_url, token=TOKEN) as grpc,
        ):
            for table in tables:
                if not table.routes:
                    continue
                wire = [route for route in table.routes if _on_websocket(route)]
                route = (wire or list(table.routes))[0]
                await _call_one(websocket if wire else grpc, route)
                called.append(route.path)
    finally:
        await server.shutdown(grace=0)
    assert calls == called
    declared = sum(
        len(re.findall(r"^service ", path.read_text(), re.MULTILINE))
        for path in CASES.glob("*/proto/**/*.proto")
    )
    assert len(bases) == declared


async def test_a_googleapis_service_is_served_from_an_instance(tmp_path: Path) -> None:
    """googleapis' ``Operations`` (no Flare options, no "Service" suffix) over gRPC."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    proto = "google/longrunning/operations_proto.proto"
    generate(purelib, tmp_path, files=[proto], python=False, mypy=False)
    spec = importlib.util.spec_from_file_location(
        "operations_proto_flare", tmp_path / proto.replace(".proto", "_flare.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls: list[str] = []
    server = flare.Server([_implementation(module.OperationsBase, calls)])
    route = module.OperationsRoutes.GET_OPERATION
    await server.start(grpc="127.0.0.1:0")
    try:
        async with flare.connect(f"grpc://127.0.0.1:{server.port('grpc')}") as channel:
            await _call_one(channel, route)
    finally:
        await server.shutdown(grace=0)
    assert calls == [route.path]
