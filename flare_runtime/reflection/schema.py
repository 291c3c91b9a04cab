"""The client side of reflection: a server's schema, fetched at run time.

::

    async with flare.connect(url) as channel:
        schema = await fetch_schema(channel, url, symbols=["pkg.ChatService"])
        route = schema.route("/pkg.ChatService/Send")         # a `Route`, built now
        request = route.request_type(text="hi")                # a protobuf message class
        reply = await channel.unary_unary(route, request)

`fetch_schema` asks the server what it serves: ``flare.reflection.v1.Reflection``
on WebSocket, QUIC and plugin transports (`flare_runtime.reflection.service`),
gRPC's standard server reflection on ``grpc://``/``grpcs://`` (``v1``, then
``v1alpha`` when the server has no v1). `load_generated` reads the same
from local generated ``*_flare.py`` modules instead. Either way the result is
a `Schema`: a descriptor pool holding the files that define the symbols asked
for (and their imports) plus the server's table of services, route ids and
push types. Message classes come from protobuf's message factory, so
requests, responses and pushes are real (upb) messages; `Route` objects are
built from the method descriptors with the server's ids.

A server's answers are untrusted input: descriptors that do not parse, that
conflict, or that import files the server did not send raise `SchemaError`,
like a symbol or route the server does not serve.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flare.options.v1 import options_pb2
from flare.reflection.v1 import reflection_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import DecodeError, Message

from flare_runtime.errors import FlareError, RpcError
from flare_runtime.routing import (
    ALL_TRANSPORTS,
    Cardinality,
    PushTable,
    PushType,
    Route,
    RouteOptions,
    ServiceRoutes,
    Transport,
)
from flare_runtime.status import StatusCode

if TYPE_CHECKING:
    from flare_runtime.client import Channel

Symbol = ServiceDescriptor | MethodDescriptor | Descriptor | EnumDescriptor | FieldDescriptor
"""What `Schema.find` returns."""

_TRANSPORTS: dict[int, Transport] = {
    options_pb2.TRANSPORT_WEBSOCKET: Transport.WEBSOCKET,
    options_pb2.TRANSPORT_QUIC: Transport.QUIC,
    options_pb2.TRANSPORT_GRPC: Transport.GRPC,
}
_TRANSPORT_VALUES = {transport: value for value, transport in _TRANSPORTS.items()}

GRPC_SCHEMES = frozenset({"grpc", "grpcs"})
_GRPC_REFLECTION = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)


class SchemaError(FlareError):
    """The server does not serve a symbol, or described itself in a way that cannot be used."""


def transport_of(url: str) -> Transport:
    """The `Transport` whose route table serves `url`: plugin transports serve WebSocket's."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in GRPC_SCHEMES:
        return Transport.GRPC
    return Transport.QUIC if scheme == "quic" else Transport.WEBSOCKET


def split_method(name: str) -> tuple[str, str]:
    """(service, method) of ``/pkg.Service/Method``, ``pkg.Service/Method``, ``pkg.Service.Method``.

    Raises `SchemaError` when `name` names no method.
    """
    text = name.strip("/")
    service, slash, method = text.rpartition("/")
    if not slash:
        service, _, method = text.rpartition(".")
    if not service or not method or "/" in service:
        raise SchemaError(f"{name!r} is not a method name (expected /package.Service/Method)")
    return service, method


@dataclass(slots=True)
class Schema:
    """A server's services, route ids and push types, with the descriptors fetched so far.

    `listing` is the server's own table (``flare.reflection.v1.ListServicesReply``;
    on gRPC names only). `pool` holds the files fetched for the symbols asked
    for. Lookups raise `SchemaError` for what the server does not serve.
    """

    listing: reflection_pb2.ListServicesReply
    pool: descriptor_pool.DescriptorPool = field(default_factory=descriptor_pool.DescriptorPool)
    _added: set[str] = field(default_factory=set)

    def service_names(self) -> list[str]:
        """Every service the server serves, sorted."""
        return sorted(entry.name for entry in self.listing.services)

    def service_entry(self, name: str) -> reflection_pb2.ServiceEntry:
        """The server's table entry for service `name`."""
        for entry in self.listing.services:
            if entry.name == name:
                return entry
        served = ", ".join(self.service_names()) or "none"
        raise SchemaError(f"the server serves no service {name} (it serves: {served})")

    def service(self, name: str) -> ServiceDescriptor:
        """The descriptor of service `name`."""
        self.service_entry(name)
        try:
            return self.pool.FindServiceByName(name)
        except KeyError:
            raise SchemaError(f"the server sent no descriptor for service {name}") from None

    def find(self, symbol: str) -> Symbol:
        """The descriptor of `symbol`: a service, method, message, enum or field."""
        name = symbol.lstrip(".")
        pool = self.pool
        finders = (
            pool.FindServiceByName,
            pool.FindMessageTypeByName,
            pool.FindEnumTypeByName,
            pool.FindMethodByName,
            pool.FindFieldByName,
        )
        for find in finders:
            try:
                found: Symbol = find(name)
            except KeyError:
                continue
            return found
        raise SchemaError(f"the server serves no symbol {name}")

    def route(self, name: str) -> Route[Message, Message]:
        """The `Route` of method `name` (``/pkg.Service/Method``, ``pkg.Service.Method``)."""
        service_name, method_name = split_method(name)
        entry = self.service_entry(service_name)
        service = self.service(service_name)
        method = service.methods_by_name.get(method_name)
        if method is None:
            names = ", ".join(m.name for m in service.methods) or "none"
            raise SchemaError(
                f"service {service_name} has no method {method_name} (it has: {names})"
            )
        route_id = 0
        transports = ALL_TRANSPORTS if entry.service_id else frozenset({Transport.GRPC})
        for route_entry in entry.routes:
            if route_entry.method == method_name:
                route_id = route_entry.route_id
                transports = frozenset(
                    _TRANSPORTS[value] for value in route_entry.transports if value in _TRANSPORTS
                )
        flare = _method_options(method)
        timeout_ms = flare.default_timeout_ms if flare is not None else 0
        return Route(
            path=f"/{service_name}/{method_name}",
            service_id=entry.service_id,
            route_id=route_id,
            cardinality=_cardinality(method),
            request_type=self.message_class(method.input_type.full_name),
            response_type=self.message_class(method.output_type.full_name),
            handler_name=method_name,
            options=RouteOptions(
                idempotent=flare.idempotent if flare is not None else False,
                default_timeout=timeout_ms / 1000 if timeout_ms else None,
                transports=transports,
                deprecated=method.GetOptions().deprecated,
            ),
        )

    def message_class(self, full_name: str) -> type[Message]:
        """The message class of `full_name` (built from its descriptor)."""
        try:
            descriptor = self.pool.FindMessageTypeByName(full_name)
        except KeyError:
            raise SchemaError(f"the server sent no descriptor for message {full_name}") from None
        message_class: type[Message] = message_factory.GetMessageClass(descriptor)
        return message_class

    def push_table(self) -> PushTable:
        """Every push type the server may push whose message descriptor has been fetched."""
        types: list[PushType[Any]] = []
        for entry in self.listing.push_types:
            try:
                types.append(PushType(entry.type_id, self.message_class(entry.message)))
            except SchemaError:
                continue
        return PushTable(types=tuple(types))

    def push_type_id(self, message: Message) -> int | None:
        """The push type id the server gave `message`'s type, if any."""
        name = message.DESCRIPTOR.full_name
        for entry in self.listing.push_types:
            if entry.message == name:
                return entry.type_id
        return None

    def add_files(self, serialized: Iterable[bytes]) -> None:
        """Add serialized ``FileDescriptorProto``s (in any order) to the pool.

        Files already in the pool are skipped. Raises `SchemaError` when one
        does not parse, imports a file that is neither sent nor known, or
        conflicts with one already added.
        """
        protos: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for data in serialized:
            try:
                proto = descriptor_pb2.FileDescriptorProto.FromString(data)
            except DecodeError as error:
                raise SchemaError(
                    f"the server sent a descriptor that does not parse: {error}"
                ) from None
            if not isinstance(proto.name, str) or not proto.name:
                raise SchemaError("the server sent a descriptor without a valid file name")
            protos.setdefault(proto.name, proto)

        def add(name: str, importer: str, depth: int) -> None:
            if name in self._added:
                return
            proto = protos.get(name)
            if proto is None:
                raise SchemaError(
                    f"the server's descriptors are incomplete: {importer} imports {name}, "
                    "which it did not send"
                )
            if depth > len(protos):
                raise SchemaError(f"the server's descriptors import each other in a cycle ({name})")
            for dependency in proto.dependency:
                add(dependency, name, depth + 1)
            try:
                self.pool.Add(proto)
            except (TypeError, ValueError) as error:  # conflicting or malformed definitions
                raise SchemaError(
                    f"the server sent a descriptor that cannot be used: {name}: {error}"
                ) from None
            self._added.add(name)

        for name in protos:
            add(name, name, 0)


def _method_options(method: MethodDescriptor) -> options_pb2.MethodOptions | None:
    options = method.GetOptions()
    if not options.HasExtension(options_pb2.method):
        return None
    flare: options_pb2.MethodOptions = options.Extensions[options_pb2.method]
    return flare


def _cardinality(method: MethodDescriptor) -> Cardinality:
    if method.client_streaming:
        return Cardinality.BIDI_STREAM if method.server_streaming else Cardinality.CLIENT_STREAM
    return Cardinality.SERVER_STREAM if method.server_streaming else Cardinality.UNARY


# ---------------------------------------------------------------------------- fetching


async def fetch_schema(
    channel: Channel,
    url: str,
    *,
    symbols: Sequence[str] = (),
    push_types: bool = False,
    timeout: float | None = None,
) -> Schema:
    """Ask the server at `url` (reached through `channel`) what it serves.

    The schema holds the server's table and the files defining `symbols`
    (services, methods, messages, enums) and, with `push_types`, every push
    type's message. Raises `SchemaError` for a symbol the server does not
    serve, and `RpcError` (UNIMPLEMENTED: the server serves no reflection) or
    `ConnectionClosedError` when asking fails.
    """
    if urlsplit(url).scheme.lower() in GRPC_SCHEMES:
        return await _fetch_grpc(channel, symbols, timeout)
    return await _fetch_flare(channel, symbols, push_types, timeout)


async def _fetch_flare(
    channel: Channel, symbols: Sequence[str], push_types: bool, timeout: float | None
) -> Schema:
    import asyncio  # noqa: PLC0415 -- only when fetching

    from flare.reflection.v1.reflection_flare import ReflectionRoutes  # noqa: PLC0415

    async def files(names: Sequence[str]) -> reflection_pb2.GetFilesReply | None:
        if not names:
            return None
        request = reflection_pb2.GetFilesRequest(symbols=names)
        return await channel.unary_unary(ReflectionRoutes.GET_FILES, request, timeout=timeout)

    wanted = [_service_of(symbol) for symbol in symbols]
    listing_call = channel.unary_unary(
        ReflectionRoutes.LIST_SERVICES, reflection_pb2.ListServicesRequest(), timeout=timeout
    )
    # Both questions at once: one round trip when the symbols are known up front.
    listing, found = await asyncio.gather(
        _listing(listing_call), files(wanted), return_exceptions=True
    )
    if isinstance(listing, BaseException):
        raise listing
    if isinstance(found, RpcError) and found.code is StatusCode.NOT_FOUND:
        raise SchemaError(found.message) from None
    if isinstance(found, BaseException):
        raise found
    schema = Schema(listing)
    if found is not None:
        schema.add_files(found.file_descriptor_protos)
    if push_types and schema.listing.push_types:
        pushed = await files([entry.message for entry in schema.listing.push_types])
        if pushed is not None:
            schema.add_files(pushed.file_descriptor_protos)
    return schema


async def _listing(
    call: Awaitable[reflection_pb2.ListServicesReply],
) -> reflection_pb2.ListServicesReply:
    try:
        return await call
    except RpcError as error:
        if error.code is StatusCode.UNIMPLEMENTED:
            raise SchemaError(
                "the server serves no Flare reflection (started with reflection=False?): "
                "give --generated DIR to use local generated code"
            ) from None
        raise


def _service_of(symbol: str) -> str:
    """The symbol to fetch for `symbol`: a method's service (``/pkg.S/M`` or ``pkg.S/M``)."""
    text = symbol.strip("/").lstrip(".")
    if "/" in text:
        return text.rpartition("/")[0]
    return text


async def _fetch_grpc(channel: Channel, symbols: Sequence[str], timeout: float | None) -> Schema:
    from grpc_reflection.v1alpha import reflection_pb2 as grpc_reflection  # noqa: PLC0415

    request = grpc_reflection.ServerReflectionRequest
    wanted = [_service_of(symbol) for symbol in symbols]
    questions = [request(list_services="*")]
    questions += [request(file_containing_symbol=symbol) for symbol in wanted]
    answers = await _grpc_reflection(channel, questions, timeout)
    listing = reflection_pb2.ListServicesReply()
    for service in answers[0].list_services_response.service:
        listing.services.add(name=service.name)
    schema = Schema(listing)
    parents: list[tuple[str, str]] = []
    for symbol, answer in zip(wanted, answers[1:], strict=True):
        if not answer.HasField("error_response"):
            schema.add_files(answer.file_descriptor_response.file_descriptor_proto)
        elif "." in symbol:
            # A method or field: gRPC servers find only top-level symbols; ask for its parent.
            parents.append((symbol, symbol.rpartition(".")[0]))
        else:
            raise SchemaError(f"the server serves no symbol {symbol}")
    if parents:
        questions = [request(file_containing_symbol=parent) for _, parent in parents]
        answers = await _grpc_reflection(channel, questions, timeout)
        for (symbol, _), answer in zip(parents, answers, strict=True):
            if answer.HasField("error_response"):
                raise SchemaError(f"the server serves no symbol {symbol}")
            schema.add_files(answer.file_descriptor_response.file_descriptor_proto)
    return schema


async def _grpc_reflection(
    channel: Channel, questions: Sequence[Message], timeout: float | None
) -> list[Any]:
    """The answers of gRPC server reflection (v1, else v1alpha) to `questions`, in order.

    Each question is its own call, sent with its half-close in the call's first
    batch, all at once. ``ServerReflectionInfo`` is a bidi method, but writing to
    a bidi call of a server that turns out not to serve it fails about one time
    in eight with INTERNAL "Internal error from Core" instead of UNIMPLEMENTED
    (grpcio issue 36066); a call whose only request leaves with its headers
    cannot race that way. So the route is declared as this client uses it: one
    request, a stream of answers.
    """
    import asyncio  # noqa: PLC0415 -- only when fetching

    from grpc_reflection.v1alpha import reflection_pb2 as grpc_reflection  # noqa: PLC0415

    for path in _GRPC_REFLECTION:
        route: Route[Message, Message] = Route(
            path=path,
            service_id=0,
            route_id=0,
            cardinality=Cardinality.SERVER_STREAM,
            request_type=grpc_reflection.ServerReflectionRequest,
            response_type=grpc_reflection.ServerReflectionResponse,
            handler_name="server_reflection_info",
        )
        answers = await asyncio.gather(
            *(_ask(channel, route, question, timeout) for question in questions),
            return_exceptions=True,
        )
        failures = [answer for answer in answers if isinstance(answer, BaseException)]
        if any(
            isinstance(failure, RpcError) and failure.code is StatusCode.UNIMPLEMENTED
            for failure in failures
        ):
            continue
        if failures:
            raise failures[0]
        return answers
    raise SchemaError(
        "the server serves no gRPC reflection: give --generated DIR to use local generated code"
    )


async def _ask(
    channel: Channel, route: Route[Message, Message], question: Message, timeout: float | None
) -> Any:
    async with channel.unary_stream(route, question, timeout=timeout) as call:
        async for answer in call:
            return answer
    raise SchemaError("the server's reflection answered a question with nothing")


# ---------------------------------------------------------------------------- local code


def load_generated(directory: Path) -> Schema:
    """The schema of every ``*_flare.py`` module under `directory` (imported from there).

    Raises `SchemaError` when `directory` holds none, or one fails to import.
    """
    if not directory.is_dir():
        raise SchemaError(f"--generated {directory}: not a directory")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    listing = reflection_pb2.ListServicesReply()
    push_types: dict[int, str] = {}
    modules = sorted(directory.rglob("*_flare.py"))
    if not modules:
        raise SchemaError(f"--generated {directory}: no generated *_flare.py modules")
    services: dict[str, ServiceRoutes] = {}
    for file in modules:
        name = ".".join(file.relative_to(directory).with_suffix("").parts)
        try:
            module = importlib.import_module(name)
        except Exception as error:  # generated code of another version, a syntax error...
            raise SchemaError(f"cannot import {name} from {directory}: {error}") from None
        for value in vars(module).values():
            if isinstance(value, ServiceRoutes):
                services.setdefault(value.name, value)
            elif isinstance(value, PushTable):
                for push in value.types:
                    push_types[push.type_id] = push.message_type.DESCRIPTOR.full_name
    for service_name in sorted(services):
        service = services[service_name]
        entry = listing.services.add(name=service_name, service_id=service.service_id)
        for route in service.routes:
            entry.routes.add(
                method=route.path.rsplit("/", 1)[-1],
                route_id=route.route_id,
                transports=sorted(_TRANSPORT_VALUES[kind] for kind in route.options.transports),
            )
    for type_id in sorted(push_types):
        listing.push_types.add(type_id=type_id, message=push_types[type_id])
    return Schema(listing, descriptor_pool.Default())
