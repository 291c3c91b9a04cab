"""Flare's client `Channel` over gRPC (``grpc://`` and ``grpcs://``), on `grpc.aio`.

The channel speaks plain gRPC: it calls ``/package.Service/Method`` with the
route's request and response classes as (de)serializers, so it works against
any gRPC server, Flare or not. Deadlines, metadata and cancellation are gRPC's
own; a non-OK status becomes an `RpcError` whose details are read from the
``grpc-status-details-bin`` trailer (see `flare_runtime.transports.grpc_errors`).

One `GrpcChannel` is one `grpc.aio.Channel` (one HTTP/2 connection, calls
multiplexed on it). Multicallables are built once per route and cached.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeAlias, TypeVar
from urllib.parse import urlsplit

import grpc
import grpc.aio
from google.protobuf.message import Message

from flare_runtime.calls import BidiStreamCall, ServerStreamCall, check_request
from flare_runtime.client import Channel, ConnectOptions
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError, describe
from flare_runtime.interceptors import ClientCallInfo, ClientInterceptor
from flare_runtime.metadata import EMPTY_METADATA, Metadata, MetadataLike, MetadataValue
from flare_runtime.routing import Route
from flare_runtime.status import StatusCode
from flare_runtime.transports.grpc_errors import rpc_error_from_aio

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

GRPC_DEFAULT_PORT = 50051
GRPCS_DEFAULT_PORT = 443

PemSource: TypeAlias = "bytes | str | os.PathLike[str]"
"""PEM data as `bytes`, or the path of a PEM file."""

_WireMetadata: TypeAlias = "tuple[tuple[str, MetadataValue], ...]"

_ASCII_VALUE = re.compile(r"[\x20-\x7e]*")
"""What gRPC carries in a text metadata value (printable ASCII; bytes need a -bin key)."""


def _wire_metadata(metadata: Metadata) -> _WireMetadata:
    """`metadata`'s entries, checked: grpcio would fail the call with an untyped error."""
    entries = metadata.entries()
    for key, value in entries:
        if isinstance(value, str) and not _ASCII_VALUE.fullmatch(value):
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                f"metadata {key!r}: gRPC carries only printable ASCII text "
                "(send other values under a -bin key, as bytes)",
            )
    return entries


def _read_pem(source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    try:
        with open(source, "rb") as pem:
            return pem.read()
    except OSError as error:
        raise ConfigurationError(f"cannot read {os.fspath(source)}: {describe(error)}") from None


def tls_credentials(
    *,
    ca_cert: PemSource | None = None,
    cert: PemSource | None = None,
    key: PemSource | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials for a ``grpcs://`` channel.

    `ca_cert` is the root certificate(s) to trust (default: the system roots);
    `cert` and `key` are the client's certificate chain and private key, for
    servers that require mutual TLS. BoringSSL negotiates TLS 1.3 whenever the
    server offers it.
    """
    if (cert is None) != (key is None):
        raise ConfigurationError("a client certificate needs both cert and key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(ca_cert),
        private_key=_read_pem(key),
        certificate_chain=_read_pem(cert),
    )


def parse_grpc_url(url: str) -> tuple[str, bool]:
    """Split a ``grpc://host:port`` or ``grpcs://host:port`` URL.

    Returns the grpc target (``host:port``) and whether TLS is used. A missing
    port defaults to 50051 for ``grpc://`` and 443 for ``grpcs://``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("grpc", "grpcs"):
        raise ConfigurationError(f"not a gRPC URL: {url!r} (use grpc:// or grpcs://)")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(f"a gRPC URL is grpc[s]://host[:port], got {url!r}")
    try:
        port = parts.port
    except ValueError as error:
        raise ConfigurationError(f"bad port in {url!r}: {error}") from None
    secure = parts.scheme == "grpcs"
    if port is None:
        port = GRPCS_DEFAULT_PORT if secure else GRPC_DEFAULT_PORT
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", secure


_FAILED_STATES = frozenset(
    {grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN}
)


class GrpcChannel(Channel):
    """A Flare `Channel` over one `grpc.aio` channel.

    Build it with `connect_grpc` (or ``flare_runtime.connect("grpc://…")``),
    or directly from a grpc target and optional credentials. `token`, when
    given, is sent as ``authorization: Bearer <token>`` on every call, which is
    where Flare's gRPC server (and most gRPC servers) look for it.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        metadata: MetadataLike | None = None,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Iterable[ClientInterceptor] = (),
    ) -> None:
        super().__init__(interceptors=interceptors)
        base = Metadata.coerce(metadata)
        if token is not None:
            base += (("authorization", f"Bearer {token}"),)
        try:
            self._base_metadata: _WireMetadata = _wire_metadata(base)
        except RpcError as error:
            raise ConfigurationError(error.message) from None
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.target = target
        self._closed = False
        self._unary_unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._unary_stream: dict[str, grpc.aio.UnaryStreamMultiCallable[Any, Any]] = {}
        self._stream_unary: dict[str, grpc.aio.StreamUnaryMultiCallable[Any, Any]] = {}
        self._stream_stream: dict[str, grpc.aio.StreamStreamMultiCallable[Any, Any]] = {}

    async def __aenter__(self) -> GrpcChannel:
        return self

    @property
    def grpc_channel(self) -> grpc.aio.Channel:
        """The underlying `grpc.aio.Channel` (for grpcio-specific needs)."""
        return self._channel

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Connect now instead of on the first call.

        Raises `RpcError(UNAVAILABLE)` as soon as a connection attempt fails
        (refused, TLS handshake failed) or when `timeout` seconds pass.
        grpcio would keep retrying in the background; a caller waiting here
        wants the first answer.
        """
        reason = await self._connect_failure(timeout)
        if reason is not None:
            raise RpcError(StatusCode.UNAVAILABLE, f"cannot connect to {self.target}: {reason}")

    async def _connect_failure(self, timeout: float | None) -> str | None:
        """Connect now; return None once ready, else why not (grpcio tells no more)."""
        channel = self._channel
        try:
            async with asyncio.timeout(timeout):
                state = channel.get_state(try_to_connect=True)
                while state is not grpc.ChannelConnectivity.READY:
                    if state in _FAILED_STATES:
                        return "connection failed (refused, closed, or TLS handshake failed)"
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)
        except TimeoutError:
            return f"timed out after {timeout:g} s"
        return None

    def _call_arguments(
        self, route: Route[Any, Any], timeout: float | None, metadata: Metadata | None
    ) -> tuple[float | None, _WireMetadata | None]:
        if self._closed:
            raise ConnectionClosedError("the gRPC channel is closed")
        if timeout is None:
            timeout = route.options.default_timeout
        if metadata is None or metadata is EMPTY_METADATA:
            wire = self._base_metadata or None
        else:
            wire = self._base_metadata + _wire_metadata(metadata)
        return timeout, wire

    def _raise_if_not_task_cancel(self, feed: _RequestFeed | None = None) -> None:
        """Call in ``except CancelledError``; re-raise it (bare ``raise``) if this returns.

        grpc.aio raises CancelledError for calls cancelled locally: by our own
        `cancel()` or `close()`, because the request iterator failed, or because
        the awaiting task was cancelled. Only the last one must propagate as
        CancelledError (this returns); a failed request iterator re-raises its
        own exception, the others raise `RpcError(CANCELLED)`.
        """
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return
        if feed is not None and feed.failure is not None:
            raise feed.failure
        reason = "the channel was closed" if self._closed else "the call was cancelled"
        raise RpcError(StatusCode.CANCELLED, reason) from None

    def _multicallable(
        self, cache: dict[str, Any], open_method: Callable[..., Any], route: Route[Any, Any]
    ) -> Any:
        """The grpc.aio multicallable of `route`, built once per channel and route."""
        method = cache.get(route.path)
        if method is None:
            method = cache[route.path] = open_method(
                route.path,
                request_serializer=route.request_type.SerializeToString,
                response_deserializer=route.response_type.FromString,
                # Registers the method with grpc core once, as generated stubs do.
                _registered_method=True,
            )
        return method

    async def _unary(
        self,
        route: Route[Any, ResponseT],
        request: Message,
        metadata: MetadataLike | None,
        timeout: float | None,
        info: ClientCallInfo | None,
    ) -> ResponseT:
        if type(request) is not route.request_type:
            check_request(route, request)
        timeout, wire = self._call_arguments(
            route, timeout, Metadata.coerce(metadata) if metadata else None
        )
        method = self._multicallable(self._unary_unary, self._channel.unary_unary, route)
        call = method(request, timeout=timeout, metadata=wire)
        try:
            response: ResponseT = await call
        except grpc.aio.AioRpcError as error:
            if info is not None:
                info.response_headers = _metadata(error.initial_metadata())
                info.trailers = _metadata(error.trailing_metadata())
            raise rpc_error_from_aio(error) from None
        except asyncio.CancelledError:
            self._raise_if_not_task_cancel()
            raise
        if info is not None:
            info.response_headers = _metadata(await call.initial_metadata())
            info.trailers = _metadata(await call.trailing_metadata())
        return response

    def _open_server_stream(
        self, request: Message, info: ClientCallInfo
    ) -> _GrpcServerStreamCall[Any]:
        route = info.route
        timeout, wire = self._call_arguments(route, info.timeout, info.metadata)
        method = self._multicallable(self._unary_stream, self._channel.unary_stream, route)
        return _GrpcServerStreamCall(self, method(request, timeout=timeout, metadata=wire))

    async def _client_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any], info: ClientCallInfo
    ) -> Message:
        route = info.route
        timeout, wire = self._call_arguments(route, info.timeout, info.metadata)
        feed = _RequestFeed()
        method = self._multicallable(self._stream_unary, self._channel.stream_unary, route)
        try:
            response: Message = await method(
                feed.wrap(route, requests), timeout=timeout, metadata=wire
            )
        except grpc.aio.AioRpcError as error:
            raise rpc_error_from_aio(error) from None
        except asyncio.CancelledError:
            self._raise_if_not_task_cancel(feed)
            raise
        return response

    def _open_bidi_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any] | None, info: ClientCallInfo
    ) -> _GrpcBidiStreamCall[Any, Any]:
        route = info.route
        timeout, wire = self._call_arguments(route, info.timeout, info.metadata)
        feed = _RequestFeed()
        method = self._multicallable(self._stream_stream, self._channel.stream_stream, route)
        call = method(feed.wrap(route, requests), timeout=timeout, metadata=wire)
        return _GrpcBidiStreamCall(self, call, feed, route)

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._closed

    @property
    def accepting_calls(self) -> bool:
        """False once closed, or while grpcio cannot reach the server (TRANSIENT_FAILURE).

        grpcio handles the server's GOAWAY itself (it moves new calls to a new
        connection); a server that is gone shows as TRANSIENT_FAILURE.
        """
        return not self._closed and self._channel.get_state() not in _FAILED_STATES

    async def close(self) -> None:
        """Close the channel; calls still running fail with CANCELLED."""
        if self._closed:
            return
        self._closed = True
        await self._channel.close()


class _RequestFeed:
    """Hands a caller's request iterable to grpc, checking each request's type.

    grpcio logs and swallows a serializer's exception and turns a failing
    request iterator into a bare local cancellation; the feed remembers the
    exception so the call can raise it instead.
    """

    __slots__ = ("failure",)

    def __init__(self) -> None:
        self.failure: Exception | None = None

    def wrap(
        self, route: Route[Any, Any], requests: AsyncIterable[Any] | Iterable[Any] | None
    ) -> Any:
        if requests is None:
            return None
        if isinstance(requests, AsyncIterable):
            return self._async_feed(route, requests)
        return self._sync_feed(route, requests)

    async def _async_feed(
        self, route: Route[Any, Any], requests: AsyncIterable[Any]
    ) -> AsyncIterator[Any]:
        request_type = route.request_type
        try:
            async for request in requests:
                if type(request) is not request_type:
                    check_request(route, request)
                yield request
        except Exception as error:
            self.failure = error
            raise

    def _sync_feed(self, route: Route[Any, Any], requests: Iterable[Any]) -> Iterator[Any]:
        request_type = route.request_type
        try:
            for request in requests:
                if type(request) is not request_type:
                    check_request(route, request)
                yield request
        except Exception as error:
            self.failure = error
            raise


class _GrpcServerStreamCall(ServerStreamCall[ResponseT], AsyncIterator[ResponseT]):
    """A server-streaming (or bidi) call over a grpc.aio call object."""

    def __init__(self, channel: GrpcChannel, call: Any, feed: _RequestFeed | None = None) -> None:
        self._channel = channel
        self._call = call
        self._feed = feed
        self._trailers: Metadata = EMPTY_METADATA

    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self

    async def __anext__(self) -> ResponseT:
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError as error:
            self._trailers = _metadata(error.trailing_metadata())
            raise rpc_error_from_aio(error) from None
        except asyncio.CancelledError:
            self._channel._raise_if_not_task_cancel(self._feed)
            raise
        if response is grpc.aio.EOF:
            self._trailers = _metadata(await self._call.trailing_metadata())
            raise StopAsyncIteration
        result: ResponseT = response
        return result

    async def initial_metadata(self) -> Metadata:
        """Wait for and return the server's response headers."""
        try:
            return _metadata(await self._call.initial_metadata())
        except asyncio.CancelledError:
            self._channel._raise_if_not_task_cancel(self._feed)
            raise

    def trailing_metadata(self) -> Metadata:
        """The server's trailers; empty until the call has ended."""
        return self._trailers

    def cancel(self) -> None:
        """Cancel the call; the server's handler is cancelled too."""
        self._call.cancel()


class _GrpcBidiStreamCall(
    _GrpcServerStreamCall[ResponseT],
    BidiStreamCall[RequestT, ResponseT],
    Generic[RequestT, ResponseT],
):
    """A bidirectional call over a grpc.aio StreamStreamCall."""

    def __init__(
        self, channel: GrpcChannel, call: Any, feed: _RequestFeed, route: Route[Any, Any]
    ) -> None:
        super().__init__(channel, call, feed)
        self._route = route
        self._request_type = route.request_type

    async def send(self, request: RequestT) -> None:
        """Send one request; waits while HTTP/2 flow control applies backpressure."""
        if type(request) is not self._request_type:
            check_request(self._route, request)
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError as error:
            raise rpc_error_from_aio(error) from None
        except asyncio.InvalidStateError:
            raise RpcError(StatusCode.FAILED_PRECONDITION, "the call has already ended") from None
        except asyncio.CancelledError:
            self._channel._raise_if_not_task_cancel(self._feed)
            raise

    async def done_writing(self) -> None:
        """Half-close: tell the server no more requests will follow."""
        try:
            await self._call.done_writing()
        except grpc.aio.AioRpcError as error:
            raise rpc_error_from_aio(error) from None
        except asyncio.InvalidStateError:
            return

    async def __aenter__(self) -> _GrpcBidiStreamCall[RequestT, ResponseT]:
        return self


def _metadata(entries: Iterable[tuple[str, MetadataValue]] | None) -> Metadata:
    if not entries:
        return EMPTY_METADATA
    return Metadata(entries)


def connect_grpc(
    url: str,
    *,
    token: str | None = None,
    metadata: MetadataLike | None = None,
    ca_cert: PemSource | None = None,
    cert: PemSource | None = None,
    key: PemSource | None = None,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Iterable[ClientInterceptor] = (),
) -> GrpcChannel:
    """Open a `GrpcChannel` to ``grpc://host:port`` or ``grpcs://host:port``.

    The connection is made lazily, on the first call (`GrpcChannel.wait_ready`
    connects eagerly). For ``grpcs://``, `ca_cert`/`cert`/`key` are as in
    `tls_credentials`; `server_name` overrides the name checked against the
    server's certificate (useful when dialling an IP address).
    """
    target, secure = parse_grpc_url(url)
    channel_options = list(options)
    credentials = None
    if secure:
        credentials = tls_credentials(ca_cert=ca_cert, cert=cert, key=key)
        if server_name is not None:
            channel_options.append(("grpc.ssl_target_name_override", server_name))
    elif ca_cert is not None or cert is not None or server_name is not None:
        raise ConfigurationError(f"TLS options given for a plaintext URL {url!r}; use grpcs://")
    return GrpcChannel(
        target,
        credentials=credentials,
        token=token,
        metadata=metadata,
        options=channel_options,
        interceptors=interceptors,
    )


_GRPC_EXTRA_OPTIONS = frozenset({"ca_cert", "cert", "key", "server_name", "grpc_options"})


async def open_channel(url: str, options: ConnectOptions) -> GrpcChannel:
    """What ``flare_runtime.connect("grpc[s]://…")`` calls (the grpc `TransportSpec`).

    Connects eagerly: raises `ConnectionClosedError` when the server cannot be
    reached within ``options.open_timeout``. `token` and `metadata` are sent
    with every call (gRPC has no connection-level metadata). For ``grpcs://``
    the trusted roots come from the ``ca_cert=`` option, else from the CA
    certificates loaded into ``ssl_context``, else the file named by
    ``$SSL_CERT_FILE``, else grpcio's bundled roots;
    ``cert=``/``key=`` give a client certificate and ``server_name=``
    overrides the name checked against the server's certificate.
    ``grpc_options=`` passes grpcio channel arguments through.
    """
    unknown = set(options.extra) - _GRPC_EXTRA_OPTIONS
    if unknown:
        raise ConfigurationError(f"unknown gRPC connect options: {', '.join(sorted(unknown))}")
    extra = options.extra
    ca_cert = extra.get("ca_cert")
    if ca_cert is None and url.startswith("grpcs:"):
        if options.ssl_context is not None:
            ca_cert = _pem_roots(options.ssl_context)
        else:
            # grpcio reads its own bundled roots, not OpenSSL's locations: honour the
            # usual override, as wss:// and quic:// do.
            ca_cert = os.environ.get("SSL_CERT_FILE") or None
    channel = connect_grpc(
        url,
        token=options.token,
        metadata=options.metadata,
        ca_cert=ca_cert,
        cert=extra.get("cert"),
        key=extra.get("key"),
        server_name=extra.get("server_name"),
        options=extra.get("grpc_options", ()),
        interceptors=options.interceptors,
    )
    reason = await channel._connect_failure(options.open_timeout)
    if reason is not None:
        await channel.close()
        raise ConnectionClosedError(f"cannot connect to {url}: {reason}")
    return channel


def _pem_roots(context: ssl.SSLContext) -> bytes | None:
    """The CA certificates loaded into `context` as PEM (None: none loaded explicitly)."""
    roots = context.get_ca_certs(binary_form=True)
    if not roots:
        return None
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in roots).encode()
