"""`ReflectionService`: the server side of ``flare.reflection.v1.Reflection``.

Every `flare_runtime.Server` adds one (unless built with ``reflection=False``),
so a tool with none of the server's generated code can list its services,
fetch their descriptors and call them, on WebSocket, QUIC and plugin
transports. The answers come from the server's `Router` -- what it really
serves, with the wire ids it really uses -- and from the descriptor pools of
the message classes its routes were generated with.

What it reveals: the names, ids and descriptors of the services and push
types the server serves, and of the files those import (comments are not
included: generated code carries none). Nothing else in the process: any
other symbol is NOT_FOUND, even one in the same descriptor pool. A server
whose schema is confidential passes ``reflection=False``.

Answers are computed on the first call and cached: the router does not change
once the server has started.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from flare.options.v1 import options_pb2
from flare.reflection.v1 import reflection_pb2
from flare.reflection.v1.reflection_flare import ReflectionBase
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pool import DescriptorPool

from flare_runtime.context import CallContext
from flare_runtime.errors import RpcError
from flare_runtime.routing import Router, ServiceRoutes, Transport
from flare_runtime.status import StatusCode

MAX_SYMBOLS = 256
"""The most symbols one ``GetFiles`` request may name."""

_TRANSPORTS: dict[Transport, options_pb2.Transport.ValueType] = {
    Transport.WEBSOCKET: options_pb2.TRANSPORT_WEBSOCKET,
    Transport.QUIC: options_pb2.TRANSPORT_QUIC,
    Transport.GRPC: options_pb2.TRANSPORT_GRPC,
}


class ReflectionService(ReflectionBase):
    """Describes what `router` serves (see the module docstring)."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._listing: reflection_pb2.ListServicesReply | None = None
        self._served: dict[FileDescriptor, None] | None = None
        """Every file a symbol may be looked up in, dependencies first (a dict keeps order)."""
        self._synthetic: dict[str, tuple[list[FileDescriptor], bytes]] = {}
        """Service name -> (the files it imports, its file) for tables without a descriptor."""

    async def list_services(
        self, request: reflection_pb2.ListServicesRequest, context: CallContext
    ) -> reflection_pb2.ListServicesReply:
        """Every service with its route ids and transports, and every push type."""
        if self._listing is None:
            self._listing = self._list()
        return self._listing

    async def get_files(
        self, request: reflection_pb2.GetFilesRequest, context: CallContext
    ) -> reflection_pb2.GetFilesReply:
        """The files defining `request.symbols` and their imports, dependencies first."""
        symbols = request.symbols
        if not symbols or len(symbols) > MAX_SYMBOLS:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                f"name 1 to {MAX_SYMBOLS} symbols (got {len(symbols)})",
            )
        served = self._served_files()
        wanted: dict[FileDescriptor, None] = {}
        synthetic: dict[str, bytes] = {}
        for symbol in symbols:
            made = self._synthetic.get(symbol) or self._synthetic.get(symbol.rpartition(".")[0])
            if made is not None:
                for imported in made[0]:
                    _add_with_imports(imported, wanted)
                synthetic[symbol] = made[1]
                continue
            defining = _file_defining(symbol, _pools(served))
            if defining is None or defining not in served:
                raise RpcError(StatusCode.NOT_FOUND, f"this server serves no symbol {symbol!r}")
            _add_with_imports(defining, wanted)
        found = [file.serialized_pb for file in wanted]
        found += list(dict.fromkeys(synthetic.values()))
        return reflection_pb2.GetFilesReply(file_descriptor_protos=found)

    def _list(self) -> reflection_pb2.ListServicesReply:
        reply = reflection_pb2.ListServicesReply()
        for name in sorted(self._router.services):
            service = self._router.services[name]
            entry = reply.services.add(name=name, service_id=service.service_id)
            for route in service.routes:
                entry.routes.add(
                    method=route.path.rsplit("/", 1)[-1],
                    route_id=route.route_id,
                    transports=sorted(_TRANSPORTS[kind] for kind in route.options.transports),
                )
        for type_id, message_type in sorted(self._router.push_types().items()):
            reply.push_types.add(type_id=type_id, message=message_type.DESCRIPTOR.full_name)
        return reply

    def _served_files(self) -> dict[FileDescriptor, None]:
        if self._served is None:
            served: dict[FileDescriptor, None] = {}
            for service in self._router.services.values():
                declared = _declaring_file(service)
                if declared is not None:
                    _add_with_imports(declared, served)
                    continue
                imports, proto = _synthetic_file(service)
                for file in imports:
                    _add_with_imports(file, served)
                self._synthetic[service.name] = (imports, proto)
            for message_type in self._router.push_types().values():
                _add_with_imports(cast("FileDescriptor", message_type.DESCRIPTOR.file), served)
            self._served = served
        return self._served


def _declaring_file(service: ServiceRoutes) -> FileDescriptor | None:
    """The file declaring `service`, found through its messages' pool; None for a table
    built by hand, whose service has no descriptor."""
    for route in service.routes:
        pool = route.request_type.DESCRIPTOR.file.pool
        try:
            declared: FileDescriptor = pool.FindServiceByName(service.name).file
        except KeyError:
            return None
        return declared
    return None


def _synthetic_file(service: ServiceRoutes) -> tuple[list[FileDescriptor], bytes]:
    """A file declaring `service` as its table does (a table built by hand has no
    descriptor), and the files defining its messages."""
    package, _, name = service.name.rpartition(".")
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"flare/reflection/tables/{service.name}.proto", package=package, syntax="proto3"
    )
    declared = proto.service.add(name=name)
    imports: dict[FileDescriptor, None] = {}
    for route in service.routes:
        request, response = route.request_type.DESCRIPTOR, route.response_type.DESCRIPTOR
        imports.update(dict.fromkeys((request.file, response.file)))
        declared.method.add(
            name=route.path.rsplit("/", 1)[-1],
            input_type=f".{request.full_name}",
            output_type=f".{response.full_name}",
            client_streaming=route.cardinality.client_streams,
            server_streaming=route.cardinality.server_streams,
        )
    proto.dependency.extend(file.name for file in imports)
    return list(imports), proto.SerializeToString()


def _add_with_imports(file: FileDescriptor, into: dict[FileDescriptor, None]) -> None:
    """Add `file` to `into` after every file it imports, transitively (each file once)."""
    if file in into:
        return
    for dependency in file.dependencies:
        _add_with_imports(dependency, into)
    into[file] = None


def _pools(files: Iterable[FileDescriptor]) -> list[DescriptorPool]:
    pools: list[DescriptorPool] = []
    for file in files:
        if all(pool is not file.pool for pool in pools):
            pools.append(file.pool)
    return pools


def _file_defining(symbol: str, pools: Iterable[DescriptorPool]) -> FileDescriptor | None:
    """The file defining `symbol` (a service, method, message, field or enum), if any."""
    for pool in pools:
        try:
            return pool.FindFileContainingSymbol(symbol)
        except KeyError:
            pass
        try:  # upb's pool finds no methods by FindFileContainingSymbol
            return pool.FindMethodByName(symbol).containing_service.file
        except KeyError:
            pass
    return None
