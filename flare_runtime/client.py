"""The transport-neutral client API that generated clients call.

A `Channel` is one connection (or pool) to a Flare server over any transport;
`flare_runtime.connect(url)` picks the implementation from the URL scheme.
Generated ``*Client`` classes are thin typed wrappers over the four call
methods below, one per cardinality.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Generic, TypeAlias, TypeVar

from google.protobuf.message import Message

from flare_runtime.metadata import Metadata, MetadataLike
from flare_runtime.routing import Route

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

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
