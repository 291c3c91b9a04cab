"""The transport-neutral client API that generated clients call.

A `Channel` is one connection (or pool) to a Flare server over any transport;
`flare_runtime.connect(url)` picks the transport from the URL scheme in the
transport registry (`flare_runtime.transport_registry`), which names each
transport's ``async def open_channel(url, options: ConnectOptions) -> Channel``.
Generated ``*Client`` classes are thin typed wrappers over the four call
methods below, one per cardinality.
"""

from __future__ import annotations

import abc
import importlib
import ssl
import urllib.parse
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, cast

from google.protobuf.message import Message

from flare_runtime.calls import (
    BidiStreamCall,
    InterceptedStreamCall,
    ServerStreamCall,
    check_request,
    intercepted_stream_unary,
    iterate,
)
from flare_runtime.discovery.resolver import RESOLVER_SCHEMES, Resolver
from flare_runtime.errors import ConfigurationError
from flare_runtime.interceptors import (
    ClientCallInfo,
    ClientInterceptor,
    ClientUnaryCallNext,
    chain_client_unary,
)
from flare_runtime.metadata import Metadata, MetadataLike
from flare_runtime.routing import PushTable, Route
from flare_runtime.transport_registry import REGISTRY

if TYPE_CHECKING:
    from flare_runtime.protocol.config import ProtocolConfig

__all__ = [
    "BidiStreamCall",
    "Channel",
    "ConnectOptions",
    "Connecting",
    "RequestStream",
    "ServerStreamCall",
    "connect",
]

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
MessageT = TypeVar("MessageT", bound=Message)

RequestStream: TypeAlias = "AsyncIterable[MessageT] | Iterable[MessageT]"
"""What a client-streaming call accepts: any sync or async iterable of requests."""


class Channel(abc.ABC):
    """A client connection to a Flare server; one API for every transport.

    The four call methods run the channel's client interceptors (given at
    construction) around the call, the same way on every transport. A
    transport implements the call itself in four hooks -- `_unary`,
    `_client_stream`, `_open_server_stream`, `_open_bidi_stream` -- and
    `close`; each hook gets the call's `ClientCallInfo` (``None`` for an
    uninterceptored unary call, which costs no info object) and must fill in
    its ``response_headers`` and ``trailers`` when they arrive.
    """

    interceptors: tuple[ClientInterceptor, ...] = ()
    _unary_chain: ClientUnaryCallNext | None = None

    def __init__(self, *, interceptors: Iterable[ClientInterceptor] = ()) -> None:
        self.interceptors = tuple(interceptors)
        if self.interceptors:
            self._unary_chain = chain_client_unary(self.interceptors, self._unary_terminal)

    # ------------------------------------------------------------------ calls

    def unary_unary(
        self,
        route: Route[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> Coroutine[Any, Any, ResponseT]:
        """Send one request; await the result for the one response (it raises `RpcError`).

        Returns the call's coroutine: without interceptors, the transport's own
        (the call costs no coroutine of this ladder's); with them, the chain's.
        """
        if self._unary_chain is None:
            return self._unary(route, request, metadata, timeout, None)
        return self._intercepted_unary(route, request, metadata, timeout)

    async def _intercepted_unary(
        self,
        route: Route[Any, ResponseT],
        request: Message,
        metadata: MetadataLike | None,
        timeout: float | None,
    ) -> ResponseT:
        chain = self._unary_chain
        assert chain is not None
        info = ClientCallInfo(route, Metadata.coerce(metadata), timeout)
        return cast(ResponseT, await chain(request, info))

    def unary_stream(
        self,
        route: Route[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> ServerStreamCall[ResponseT]:
        """Start a server-streaming call; iterate the result for responses."""
        check_request(route, request)
        info = ClientCallInfo(route, Metadata.coerce(metadata), timeout)
        if self.interceptors:
            return self._intercepted_stream(info, iterate((request,)))
        return self._open_server_stream(request, info)

    async def stream_unary(
        self,
        route: Route[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> ResponseT:
        """Send every request of `requests`, then return the one response."""
        info = ClientCallInfo(route, Metadata.coerce(metadata), timeout)
        if self.interceptors:
            response = await intercepted_stream_unary(
                self.interceptors, info, requests, self._client_stream
            )
            return cast(ResponseT, response)
        return cast(ResponseT, await self._client_stream(requests, info))

    def stream_stream(
        self,
        route: Route[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT] | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> BidiStreamCall[RequestT, ResponseT]:
        """Start a bidirectional call.

        With `requests`, they are sent in the background and the stream is
        half-closed after the last one; without, use the call's `send` and
        `done_writing`.
        """
        info = ClientCallInfo(route, Metadata.coerce(metadata), timeout)
        if self.interceptors:
            return self._intercepted_stream(info, None if requests is None else iterate(requests))
        return self._open_bidi_stream(requests, info)

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the channel; calls still running fail with CANCELLED."""

    @property
    def accepting_calls(self) -> bool:
        """False once no new call can start here: the channel is closed, or its server
        is draining (GOAWAY). A balancing channel sends calls only to channels that
        accept them."""
        return True

    # ------------------------------------------------------------------ transport hooks

    @abc.abstractmethod
    async def _unary(
        self,
        route: Route[Any, ResponseT],
        request: Message,
        metadata: MetadataLike | None,
        timeout: float | None,
        info: ClientCallInfo | None,
    ) -> ResponseT:
        """Make one unary call; return its response.

        The ladder leaves checking the request (`check_request`) and coercing
        `metadata` to the call's own coroutine, so that nothing is raised
        before the caller awaits.
        """

    @abc.abstractmethod
    async def _client_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any], info: ClientCallInfo
    ) -> Message:
        """Send every request (checking each one's type), half-close, return the one response."""

    @abc.abstractmethod
    def _open_server_stream(self, request: Message, info: ClientCallInfo) -> ServerStreamCall[Any]:
        """Start a server-streaming call with its one request."""

    @abc.abstractmethod
    def _open_bidi_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any] | None, info: ClientCallInfo
    ) -> BidiStreamCall[Any, Any]:
        """Start a bidi call; with `requests`, send them in the background, then half-close."""

    async def _unary_terminal(self, request: Message, info: ClientCallInfo) -> Message:
        return await self._unary(info.route, request, info.metadata, info.timeout, info)

    def _intercepted_stream(
        self, info: ClientCallInfo, requests: AsyncIterator[Message] | None
    ) -> InterceptedStreamCall[Any, Any]:
        return InterceptedStreamCall(
            self.interceptors,
            info,
            requests,
            open_server_stream=self._open_server_stream,
            open_bidi_stream=self._open_bidi_stream,
        )

    # ------------------------------------------------------------------ pushes

    def pushes(self) -> AsyncIterator[Message]:
        """Iterate the messages the server pushes, decoded by push type id.

        Decoding uses the push tables given to `connect`; unknown push types
        are skipped. Iteration ends when the channel closes. Transports without
        server push (gRPC) raise `ConfigurationError`.
        """
        raise ConfigurationError(f"{type(self).__name__} has no server push")

    def on_push(self, callback: Callable[[Message], None]) -> None:
        """Call `callback(message)` for every server push (in the event loop; must not block).

        Transports without server push (gRPC) raise `ConfigurationError`.
        """
        raise ConfigurationError(f"{type(self).__name__} has no server push")

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


# ---------------------------------------------------------------------------- connect


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """Everything `connect` was given, handed to the transport's ``open_channel``.

    Transports ignore what does not apply to them (gRPC has no connection
    metadata: it sends `token`/`metadata` with every call instead).
    """

    token: str | None = None
    """Bearer token: ``authorization: Bearer <token>`` once per connection."""
    metadata: Metadata = field(default_factory=Metadata)
    """Connection-level metadata (WebSocket: ``x-flare-*`` handshake headers)."""
    interceptors: tuple[ClientInterceptor, ...] = ()
    push_tables: tuple[PushTable, ...] = ()
    """Push types to decode; pushes of other types are ignored."""
    ssl_context: ssl.SSLContext | None = None
    """TLS settings for wss:// / quic:// / grpcs:// (default: system trust, TLS 1.3)."""
    open_timeout: float = 10.0
    max_pending_pushes: int = 1024
    compression: str | None = None
    """WebSocket permessage-deflate: None (default) or "deflate"."""
    protocol: ProtocolConfig | None = None
    """Flare wire-protocol limits and keepalive (WebSocket, QUIC)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Transport-specific options (e.g. QUIC's ticket store), by name."""

    def opening_metadata(self) -> Metadata:
        """The connection's opening metadata: `metadata`, then ``authorization`` from `token`."""
        if self.token is None:
            return self.metadata
        return Metadata([*self.metadata.entries(), ("authorization", f"Bearer {self.token}")])


class ChannelOpener(Protocol):
    """A transport's ``open_channel``, as its `TransportSpec` names it.

    Raises `ConnectionClosedError` when the server cannot be reached and
    `ConfigurationError` for an option (`ConnectOptions.extra`) it does not take.
    """

    def __call__(self, url: str, options: ConnectOptions) -> Awaitable[Channel]: ...


BALANCING_CHANNEL = "flare_runtime.discovery.channel"
"""The module whose ``open_balancing_channel(address, options)`` opens a channel to a
service address (named, not imported: it builds on this module)."""


class Connecting:
    """What `connect` returns: await it for a channel, or use it with ``async with``."""

    def __init__(self, url: str | Resolver, options: ConnectOptions) -> None:
        self._url = url
        self._options = options
        self._channel: Channel | None = None

    async def _open(self) -> Channel:
        url = self._url
        if isinstance(url, Resolver) or url.split(":", 1)[0].lower() in RESOLVER_SCHEMES:
            balancing = importlib.import_module(BALANCING_CHANNEL)
            channel: Channel = await balancing.open_balancing_channel(url, self._options)
            return channel
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        open_channel: ChannelOpener = REGISTRY.for_scheme(scheme).load_channel()
        return await open_channel(url, self._options)

    def __await__(self) -> Generator[Any, None, Channel]:
        return self._open().__await__()

    async def __aenter__(self) -> Channel:
        self._channel = await self._open()
        return self._channel

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()


def connect(
    url: str | Resolver,
    *,
    token: str | None = None,
    metadata: MetadataLike | None = None,
    interceptors: Iterable[ClientInterceptor] = (),
    push_tables: Iterable[PushTable] = (),
    ssl_context: ssl.SSLContext | None = None,
    open_timeout: float = 10.0,
    **extra: Any,
) -> Connecting:
    """Open a `Channel` to `url`; the scheme picks the transport (the transport registry).

    ``channel = await connect(url)`` or ``async with connect(url) as channel:``.
    A service address -- ``etcd://…/SERVICE``, ``static:URL,URL…`` or a
    `Resolver` -- opens a balancing channel over the service's endpoints
    instead (`flare_runtime.discovery.channel`; its own options, ``retry=``,
    ``health=``, ``zone=``…, are keywords here too).
    Raises `ConnectionClosedError` when the server cannot be reached and
    `ConfigurationError` for an unknown scheme (or a broken transport plugin)
    or an option the transport does not take. `extra` holds transport
    options (``compression=``, ``protocol=`` for the wire transports,
    ``max_pending_pushes=``, or a transport's own).
    """
    known = {"compression", "protocol", "max_pending_pushes"}
    options = ConnectOptions(
        token=token,
        metadata=Metadata.coerce(metadata),
        interceptors=tuple(interceptors),
        push_tables=tuple(push_tables),
        ssl_context=ssl_context,
        open_timeout=open_timeout,
        **{key: value for key, value in extra.items() if key in known},
        extra={key: value for key, value in extra.items() if key not in known},
    )
    return Connecting(url, options)
