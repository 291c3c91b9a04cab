"""The transport-neutral client API that generated clients call.

A `Channel` is one connection (or pool) to a Flare server over any transport;
`flare_runtime.connect(url)` picks the transport from the URL scheme in the
transport registry (`flare_runtime.transports.registry`), which names each
transport's ``async def open_channel(url, options: ConnectOptions) -> Channel``.
Generated ``*Client`` classes are thin typed wrappers over the four call
methods below, one per cardinality.
"""

from __future__ import annotations

import abc
import ssl
import urllib.parse
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar

from google.protobuf.message import Message

from flare_runtime.errors import ConfigurationError
from flare_runtime.metadata import Metadata, MetadataLike
from flare_runtime.routing import PushTable, Route
from flare_runtime.transports.registry import REGISTRY

if TYPE_CHECKING:
    from flare_runtime.interceptors import ClientInterceptor
    from flare_runtime.protocol.config import ProtocolConfig

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
MessageT = TypeVar("MessageT", bound=Message)

RequestStream: TypeAlias = "AsyncIterable[MessageT] | Iterable[MessageT]"
"""What a client-streaming call accepts: any sync or async iterable of requests."""


class ServerStreamCall(abc.ABC, Generic[ResponseT]):
    """A call whose responses arrive as a stream.

    Iterate it (``async for reply in call``) to receive responses; iteration
    ends when the server finishes with OK and raises `RpcError` otherwise.
    Leaving an ``async with`` block, or calling `cancel`, cancels the call.
    """

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[ResponseT]: ...

    @abc.abstractmethod
    async def initial_metadata(self) -> Metadata:
        """Wait for and return the server's response headers."""

    @abc.abstractmethod
    def trailing_metadata(self) -> Metadata:
        """The server's trailers; empty until the call has ended."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Cancel the call; the server's handler is cancelled too."""

    async def __aenter__(self) -> ServerStreamCall[ResponseT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()


class BidiStreamCall(ServerStreamCall[ResponseT], Generic[RequestT, ResponseT]):
    """A bidirectional call: `send` requests while iterating responses."""

    @abc.abstractmethod
    async def send(self, request: RequestT) -> None:
        """Send one request; waits while the peer applies backpressure."""

    @abc.abstractmethod
    async def done_writing(self) -> None:
        """Half-close: tell the server no more requests will follow."""

    async def __aenter__(self) -> BidiStreamCall[RequestT, ResponseT]:
        return self


class Channel(abc.ABC):
    """A client connection to a Flare server; one API for every transport."""

    @abc.abstractmethod
    async def unary_unary(
        self,
        route: Route[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> ResponseT:
        """Send one request, return the one response or raise `RpcError`."""

    @abc.abstractmethod
    def unary_stream(
        self,
        route: Route[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> ServerStreamCall[ResponseT]:
        """Start a server-streaming call; iterate the result for responses."""

    @abc.abstractmethod
    async def stream_unary(
        self,
        route: Route[RequestT, ResponseT],
        requests: AsyncIterable[RequestT] | Iterable[RequestT],
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> ResponseT:
        """Send every request of `requests`, then return the one response."""

    @abc.abstractmethod
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

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the channel; calls still running fail with CANCELLED."""

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


class Connecting:
    """What `connect` returns: await it for a channel, or use it with ``async with``."""

    def __init__(self, url: str, options: ConnectOptions) -> None:
        self._url = url
        self._options = options
        self._channel: Channel | None = None

    async def _open(self) -> Channel:
        scheme = urllib.parse.urlsplit(self._url).scheme.lower()
        open_channel: ChannelOpener = REGISTRY.for_scheme(scheme).load_channel()
        return await open_channel(self._url, self._options)

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
    url: str,
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
