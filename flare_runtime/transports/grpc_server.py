"""Serve a Flare `Dispatcher` over gRPC, with grpcio's asyncio server.

gRPC is the honest exception to Flare's wire protocol: grpcio owns HTTP/2 and
message framing, so this adapter only builds native method handlers from the
routing table and runs every call through the same `Dispatcher` as WebSocket
and QUIC -- same auth, interceptors and error mapping. A stock gRPC client
cannot tell it from a grpcio service:

* routes are served at their gRPC paths, ``/package.Service/Method``, with
  grpcio's registered-method handlers;
* a failed call ends with the same-numbered `grpc.StatusCode`, its message as
  the status details, and a ``google.rpc.Status`` with the `RpcError`'s
  details in the ``grpc-status-details-bin`` trailer;
* the caller's deadline becomes ``context.deadline``; when it passes, or the
  caller cancels, grpcio cancels the handler's task;
* request bytes that do not decode fail INVALID_ARGUMENT, a request over the
  route's ``max_message_bytes`` fails RESOURCE_EXHAUSTED, both before the
  handler runs;
* the standard health service (``grpc.health.v1.Health``) and server
  reflection (``grpc.reflection.v1`` and ``v1alpha``, see `serve_reflection`)
  are served alongside.

`start_listener` is what ``Server.start(grpc="host:port")`` calls
(the grpc `TransportSpec` in `flare_runtime.transport_registry` names it);
`GrpcServer` also works alone, given a `Dispatcher`.

What gRPC cannot carry: server pushes outside a call (``context.connection``
is None) and connection-level authentication (credentials travel as
``authorization`` metadata on every call instead).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from flare_runtime.context import CallContext
from flare_runtime.dispatch import Dispatcher, ServedRoute
from flare_runtime.errors import ConfigurationError, RpcError
from flare_runtime.metadata import Metadata, MetadataValue
from flare_runtime.routing import Cardinality, Route, Router, Transport
from flare_runtime.stats import CallMeter
from flare_runtime.status import StatusCode
from flare_runtime.transports.grpc_errors import (
    STATUS_DETAILS_KEY,
    status_details_bin,
    to_grpc_code,
)

if TYPE_CHECKING:
    from flare_runtime.protocol.config import ProtocolConfig
    from flare_runtime.server import Server, TLSFiles

STREAM_END_SETTLE = 0.002
"""Default seconds a request stream's end waits for a cancellation to land (see `_parsed`)."""

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
REFLECTION_V1_SERVICE = "grpc.reflection.v1.ServerReflection"

_monotonic = time.monotonic
_Parse: TypeAlias = Callable[[bytes], Message]
_WireMetadata: TypeAlias = "tuple[tuple[str, MetadataValue], ...]"


@dataclass(frozen=True, slots=True)
class GrpcTls:
    """TLS for the gRPC server: PEM certificate chain and private key.

    With `client_ca`, clients must present a certificate signed by it (mutual
    TLS). BoringSSL negotiates TLS 1.3 with every client that offers it.
    """

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert: str, key: str, client_ca: str | None = None) -> GrpcTls:
        """Read the PEM files at `cert`, `key` and optionally `client_ca`."""

        def read(path: str) -> bytes:
            with open(path, "rb") as pem:
                return pem.read()

        return cls(read(cert), read(key), read(client_ca) if client_ca else None)

    def credentials(self) -> grpc.ServerCredentials:
        """The grpcio server credentials for this certificate."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


class GrpcServer:
    """One grpcio asyncio server serving a `Dispatcher`'s routes.

    Lifecycle: `start` (binds and starts serving), then `stop` (graceful:
    refuses new calls, lets running ones finish within `grace` seconds, then
    cancels them). Routes whose options exclude `Transport.GRPC` are not served
    (a caller gets UNIMPLEMENTED).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        health: bool = True,
        reflection: bool = True,
        options: Sequence[tuple[str, Any]] = (),
        stream_end_settle: float = STREAM_END_SETTLE,
        max_message_bytes: int | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.dispatcher = dispatcher
        self._health_enabled = health
        self._reflection_enabled = reflection
        # grpcio binds with SO_REUSEPORT unless told otherwise, which lets a
        # second server start on a busy port and silently take half its
        # connections; only worker processes meant to share a port want that.
        self._options = (("grpc.so_reuseport", int(reuse_port)), *options)
        self.stream_end_settle = stream_end_settle
        """Seconds a request stream's end waits for a cancellation to land (see `_parsed`)."""
        self.max_message_bytes = max_message_bytes
        """Request size limit of routes that set no ``max_message_bytes`` of their own."""
        self._server: grpc.aio.Server | None = None
        self._health: HealthServicer | None = None
        self.port: int | None = None
        """The bound port, once `start` has returned."""

    def service_names(self) -> list[str]:
        """The gRPC services this server answers, Flare's and the standard ones."""
        names = [
            service.name
            for service in self.dispatcher.router.services.values()
            if any(Transport.GRPC in route.options.transports for route in service.routes)
        ]
        if self._health_enabled:
            names.append(HEALTH_SERVICE)
        if self._reflection_enabled:
            names += [REFLECTION_V1_SERVICE, REFLECTION_SERVICE]
        return names

    async def start(self, address: str, *, tls: GrpcTls | None = None) -> int:
        """Bind `address` (``host:port``, ``:port`` for every interface; port 0
        picks one) and start serving.

        Returns the bound port. Raises `ConfigurationError` when the address is
        malformed or cannot be bound ("address already in use" when another
        socket holds it). The port is this server's alone unless it was made
        with ``reuse_port=True`` (worker processes sharing one port).
        """
        if self._server is not None:
            raise ConfigurationError("this gRPC server is already started")
        # Checked here: grpcio silently wraps an out-of-range port (99999 binds 34463).
        address = grpc_address(address)
        server = grpc.aio.server(options=self._options)
        for service_name, handlers in self._method_handlers().items():
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service_name, handlers),)
            )
            server.add_registered_method_handlers(service_name, handlers)
        if self._health_enabled:
            self._health = HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            for name in ("", *self.service_names()):
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self._reflection_enabled:
            serve_reflection(server, self.service_names())
        try:
            if tls is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, tls.credentials())
        except RuntimeError as error:
            await server.stop(None)  # release grpcio's server object now, not in __del__
            reason = bind_error(address) or str(error)
            raise ConfigurationError(f"cannot bind gRPC server to {address}: {reason}") from None
        await server.start()
        self._server = server
        self.port = port
        return port

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop gracefully: health turns NOT_SERVING, new calls are refused,
        running calls get `grace` seconds to finish and are then cancelled."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await server.stop(grace)

    async def wait_closed(self) -> None:
        """Wait until the server has stopped."""
        if self._server is not None:
            await self._server.wait_for_termination()

    # ------------------------------------------------------------- handlers

    def _method_handlers(self) -> dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]]:
        services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        for bound in self.dispatcher.routes(Transport.GRPC):
            route = bound.route
            service_name, _, method_name = route.path[1:].rpartition("/")
            services.setdefault(service_name, {})[method_name] = self._method_handler(bound)
        return services

    def _method_handler(self, bound: ServedRoute) -> grpc.RpcMethodHandler[Any, Any]:
        route = bound.route
        serialize = route.response_type.SerializeToString
        # Requests arrive as bytes (no deserializer): decoding here lets a bad
        # or oversized message fail with a precise status instead of grpcio's
        # generic INTERNAL.
        parse = _parser(route, self.max_message_bytes)
        cardinality = route.cardinality
        if cardinality is Cardinality.UNARY:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_handler(bound, parse), response_serializer=serialize
            )
        if cardinality is Cardinality.SERVER_STREAM:
            return grpc.unary_stream_rpc_method_handler(
                self._server_stream_handler(bound, parse), response_serializer=serialize
            )
        if cardinality is Cardinality.CLIENT_STREAM:
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream_handler(bound, parse), response_serializer=serialize
            )
        return grpc.stream_stream_rpc_method_handler(
            self._bidi_stream_handler(bound, parse), response_serializer=serialize
        )

    def _unary_handler(
        self, bound: ServedRoute, parse: _Parse
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message | None]]:
        dispatcher = self.dispatcher
        route = bound.route
        response_type = route.response_type

        meter = bound.meter

        async def handle(
            raw: bytes, grpc_context: grpc.aio.ServicerContext[Any, Any]
        ) -> Message | None:
            started = _monotonic()
            context = _call_context(route, grpc_context)
            try:
                response = await dispatcher.unary(bound, parse(raw), context)
                if type(response) is not response_type:
                    raise dispatcher.wrong_response_error(route, response)
            except RpcError as error:
                await _fail(grpc_context, context, error, meter, started)
                return None
            except asyncio.CancelledError:
                _count(meter, started, context, grpc_context, StatusCode.CANCELLED)
                raise
            if context.has_metadata_to_send(False):
                await _succeed(grpc_context, context)
            meter.ended(StatusCode.OK, started, context)
            return response

        return handle

    def _server_stream_handler(
        self, bound: ServedRoute, parse: _Parse
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
        dispatcher = self.dispatcher
        route = bound.route

        meter = bound.meter

        async def handle(raw: bytes, grpc_context: grpc.aio.ServicerContext[Any, Any]) -> None:
            started = _monotonic()
            context = _call_context(route, grpc_context)
            try:
                responses = dispatcher.server_stream(bound, parse(raw), context)
                headers_sent = await _write_all(grpc_context, context, responses, dispatcher)
            except RpcError as error:
                await _fail(grpc_context, context, error, meter, started)
                return
            except asyncio.CancelledError:
                _count(meter, started, context, grpc_context, StatusCode.CANCELLED)
                raise
            await _succeed(grpc_context, context, headers_sent=headers_sent)
            meter.ended(StatusCode.OK, started, context)

        return handle

    def _client_stream_handler(
        self, bound: ServedRoute, parse: _Parse
    ) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        dispatcher = self.dispatcher
        route = bound.route

        meter = bound.meter

        async def handle(
            raw_requests: AsyncIterator[bytes], grpc_context: grpc.aio.ServicerContext[Any, Any]
        ) -> Message | None:
            started = _monotonic()
            context = _call_context(route, grpc_context)
            try:
                response = await dispatcher.client_stream(
                    bound, _parsed(raw_requests, parse, self.stream_end_settle), context
                )
                if type(response) is not route.response_type:
                    raise dispatcher.wrong_response_error(route, response)
            except RpcError as error:
                await _fail(grpc_context, context, error, meter, started)
                return None
            except asyncio.CancelledError:
                _count(meter, started, context, grpc_context, StatusCode.CANCELLED)
                raise
            if context.response_headers or context.trailers:
                await _succeed(grpc_context, context)
            meter.ended(StatusCode.OK, started, context)
            return response

        return handle

    def _bidi_stream_handler(
        self, bound: ServedRoute, parse: _Parse
    ) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
        dispatcher = self.dispatcher
        route = bound.route

        meter = bound.meter

        async def handle(
            raw_requests: AsyncIterator[bytes], grpc_context: grpc.aio.ServicerContext[Any, Any]
        ) -> None:
            started = _monotonic()
            context = _call_context(route, grpc_context)
            try:
                responses = dispatcher.bidi_stream(
                    bound, _parsed(raw_requests, parse, self.stream_end_settle), context
                )
                headers_sent = await _write_all(grpc_context, context, responses, dispatcher)
            except RpcError as error:
                await _fail(grpc_context, context, error, meter, started)
                return
            except asyncio.CancelledError:
                _count(meter, started, context, grpc_context, StatusCode.CANCELLED)
                raise
            await _succeed(grpc_context, context, headers_sent=headers_sent)
            meter.ended(StatusCode.OK, started, context)

        return handle


class GrpcListener:
    """The gRPC side of a running `Server`: a `GrpcServer` bound to one address."""

    def __init__(self, server: GrpcServer, port: int) -> None:
        self.grpc_server = server
        self._port = port

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return self._port

    async def shutdown(self, grace: float) -> None:
        """Health turns NOT_SERVING, new calls are refused, calls in flight get `grace`
        seconds to finish and are then cancelled (gRPC's own graceful shutdown: GOAWAY)."""
        await self.grpc_server.stop(grace)


async def start_listener(
    server: Server, address: str, *, tls: TLSFiles | None = None
) -> GrpcListener:
    """Serve `server`'s dispatcher over gRPC on `address` (``host:port``, ``:port``).

    An empty host binds every interface. With `tls`, the listener speaks
    ``grpcs`` with that certificate (TLS 1.3 negotiated by BoringSSL). The
    server's protocol limits apply on gRPC too (`grpc_limits`).
    """
    protocol = server.options.protocol
    grpc_server = GrpcServer(
        server.dispatcher,
        reflection=server.reflection,
        options=grpc_limits(protocol, server.router),
        max_message_bytes=protocol.settings.max_message_size,
        reuse_port=server.shared_ports is not None,
    )
    credentials = None if tls is None else GrpcTls.from_files(tls.cert_file, tls.key_file)
    port = await grpc_server.start(address, tls=credentials)
    return GrpcListener(grpc_server, port)


def serve_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve gRPC server reflection, ``grpc.reflection.v1`` and ``v1alpha``, on `server`.

    grpcio-reflection implements only v1alpha, which grpcurl, Postman and
    current gRPC tooling ask for second or not at all; v1 is the same protocol
    under another package name (every message field has the same number and
    type), so one v1alpha servicer answers both, and v1's descriptor, derived
    from v1alpha's, is added to the default pool so that v1 describes itself.
    """
    servicer = ReflectionServicer(service_names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # type: ignore[no-untyped-call]
        servicer, server
    )
    _add_reflection_v1_descriptor()
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    methods = {"ServerReflectionInfo": handler}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1_SERVICE, methods),)
    )
    server.add_registered_method_handlers(REFLECTION_V1_SERVICE, methods)


REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _add_reflection_v1_descriptor() -> None:
    """Add ``grpc/reflection/v1/reflection.proto`` to the default pool, unless it is there.

    Built from v1alpha's file by renaming its package, as the upstream v1 file
    was made (grpc/grpc src/proto/grpc/reflection/v1/reflection.proto).
    """
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(REFLECTION_V1_FILE)
    except KeyError:
        pass
    else:
        return
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = proto.package, "grpc.reflection.v1"
    proto.name = REFLECTION_V1_FILE
    proto.package = new
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(f".{old}."):
                field.type_name = f".{new}." + field.type_name[len(old) + 2 :]
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{old}.", f".{new}.")
            method.output_type = method.output_type.replace(f".{old}.", f".{new}.")
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.java_multiple_files = True
    pool.AddSerializedFile(proto.SerializeToString())


def grpc_limits(protocol: ProtocolConfig, router: Router) -> list[tuple[str, Any]]:
    """grpcio server arguments giving gRPC the same limits as the Flare wire protocol.

    Largest request message (raised to the largest route ``max_message_bytes``;
    the adapter checks each route's own limit, or the protocol's), concurrent
    calls per connection (HTTP/2 ``SETTINGS_MAX_CONCURRENT_STREAMS``), metadata
    size, and keepalive pings that close a connection whose peer stopped
    answering.
    """
    settings = protocol.settings
    largest = max(
        [settings.max_message_size]
        + [
            bound.route.options.max_message_bytes
            for bound in router.routes()
            if bound.route.options.max_message_bytes is not None
        ]
    )
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", largest),
        ("grpc.max_concurrent_streams", settings.max_concurrent_calls),
        ("grpc.max_metadata_size", settings.max_metadata_size),
    ]
    if protocol.keepalive_interval is not None:
        options += [
            ("grpc.keepalive_time_ms", int(protocol.keepalive_interval * 1000)),
            ("grpc.keepalive_timeout_ms", int(protocol.keepalive_timeout * 1000)),
        ]
    return options


def bind_error(address: str) -> str | None:
    """Why a TCP socket of this process cannot bind `address` (a `grpc_address`), or None.

    grpcio says only "Failed to bind"; this asks the operating system the same
    question to name the reason ("[Errno 98] Address already in use").
    """
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except OSError as error:
        return str(error)
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                return str(error)
    return None


def grpc_address(address: str) -> str:
    """Normalize ``:port`` / ``host:port`` / ``[v6]:port`` into a grpcio bind address."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigurationError(f"expected HOST:PORT for gRPC, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parser(route: Route[Any, Any], default_limit: int | None) -> _Parse:
    from_string = route.request_type.FromString
    type_name = route.request_type.DESCRIPTOR.full_name
    limit = route.options.max_message_bytes
    if limit is None:
        limit = default_limit

    def parse(raw: bytes) -> Message:
        if limit is not None and len(raw) > limit:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"request of {len(raw)} bytes exceeds the {limit}-byte limit of {route.path}",
            )
        try:
            message: Message = from_string(raw)
        except DecodeError:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT, f"request is not a valid {type_name}"
            ) from None
        return message

    return parse


async def _parsed(
    raw_requests: AsyncIterator[bytes], parse: _Parse, settle: float
) -> AsyncIterator[Message]:
    async for raw in raw_requests:
        yield parse(raw)
    # grpcio's aio server ends the request iterator the same way for a
    # half-close and for a cancelled call (RST_STREAM, deadline); the
    # cancellation of the handler's task follows separately, measured at
    # ~15 us (median) to several ms (p99, loaded 2-core machine) later.
    # Without this wait a cancelled upload could look complete to its
    # handler. A cancellation that lands interrupts the wait at once; a real
    # half-close pays `settle` seconds of latency (docs/transports/grpc.md).
    if settle > 0:
        await asyncio.sleep(settle)


def _call_context(
    route: Route[Any, Any], grpc_context: grpc.aio.ServicerContext[Any, Any]
) -> CallContext:
    remaining = grpc_context.time_remaining()
    return CallContext(
        route,
        Transport.GRPC,
        _InvocationMetadata(grpc_context),
        None if remaining is None else time.monotonic() + remaining,
        grpc_context.peer(),
    )


class _InvocationMetadata(Metadata):
    """A call's request metadata, read from grpcio only when first used.

    Most calls never look at their metadata (no auth plugin, no interceptor
    reading it), and building it costs grpcio a tuple of named tuples per
    call. The inherited slots stay unset until a `Metadata` method first
    reads them; `__getattr__` (called only for unset attributes) fills them.
    grpcio has already validated keys and values (lower-case keys, bytes for
    ``-bin``), so Flare's per-entry checks are skipped.
    """

    __slots__ = ("_grpc_context",)

    def __init__(self, grpc_context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._grpc_context = grpc_context

    def __getattr__(self, name: str) -> Any:
        if name not in ("_entries", "_index"):
            raise AttributeError(name)
        entries = tuple(self._grpc_context.invocation_metadata() or ())
        self._entries = entries
        self._index = dict(entries)
        return self._entries if name == "_entries" else self._index


async def _write_all(
    grpc_context: grpc.aio.ServicerContext[Any, Any],
    context: CallContext,
    responses: AsyncIterator[Message],
    dispatcher: Dispatcher,
) -> bool:
    """Write every response; return whether response headers were sent.

    Headers set by the handler go out with the first response. A response of
    the wrong type raises `Dispatcher.wrong_response_error` (INTERNAL). The
    response generator is closed promptly on any exit, so the handler's
    ``finally`` blocks run in this task even when the call is cancelled.
    """
    headers_sent = False
    route = context.route
    response_type = route.response_type
    try:
        async for response in responses:
            if type(response) is not response_type:
                raise dispatcher.wrong_response_error(route, response)
            if not headers_sent:
                headers_sent = True
                if context.response_headers:
                    await grpc_context.send_initial_metadata(context.response_headers.entries())
            try:
                await grpc_context.write(response)
            except Exception:
                if grpc_context.done():
                    # The client cancelled while we were writing; grpcio reports
                    # it as a failed batch. End like any cancelled handler.
                    raise asyncio.CancelledError from None
                raise
    finally:
        await cast(Any, responses).aclose()
    return headers_sent


async def _succeed(
    grpc_context: grpc.aio.ServicerContext[Any, Any],
    context: CallContext,
    *,
    headers_sent: bool = False,
) -> None:
    if context.response_headers and not headers_sent:
        await grpc_context.send_initial_metadata(context.response_headers.entries())
    if context.trailers:
        grpc_context.set_trailing_metadata(context.trailers.entries())


def _count(
    meter: CallMeter,
    started: float,
    context: CallContext,
    grpc_context: grpc.aio.ServicerContext[Any, Any],
    code: StatusCode,
) -> None:
    """Count a call cancelled under its handler: DEADLINE_EXCEEDED when its time is up."""
    remaining = grpc_context.time_remaining()
    if remaining is not None and remaining <= 0:
        code = StatusCode.DEADLINE_EXCEEDED
    meter.ended(code, started, context)


async def _fail(
    grpc_context: grpc.aio.ServicerContext[Any, Any],
    context: CallContext,
    error: RpcError,
    meter: CallMeter,
    started: float,
) -> None:
    """End the call with `error`'s status, message and details (no exception raised)."""
    code = error.code if error.code is not StatusCode.OK else StatusCode.UNKNOWN
    meter.ended(code, started, context)
    trailers: _WireMetadata = context.trailers.entries()
    if error.details:
        trailers = (*trailers, (STATUS_DETAILS_KEY, status_details_bin(error)))
    if trailers:
        grpc_context.set_trailing_metadata(trailers)
    grpc_context.set_code(to_grpc_code(code))
    grpc_context.set_details(error.message)
