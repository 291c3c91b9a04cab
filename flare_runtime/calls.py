"""The calls a `Channel` returns, and the interceptor-driven call every channel shares.

* `ServerStreamCall` / `BidiStreamCall`: what ``unary_stream`` and
  ``stream_stream`` return, on every transport.
* For `Channel` implementations: `InterceptedStreamCall` (a server-stream or
  bidi call run through client interceptors) and `intercepted_stream_unary`
  (a client-stream call run through them), given the transport's own
  functions that start the call on the wire; `check_request` and `iterate`.
  `Channel` (flare_runtime.client) wires them up once for every transport.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeAlias, TypeVar, cast

from google.protobuf.message import Message

from flare_runtime.errors import RpcError
from flare_runtime.interceptors import ClientCallInfo, ClientInterceptor, chain_client_stream
from flare_runtime.metadata import EMPTY_METADATA, Metadata
from flare_runtime.routing import Cardinality, Route
from flare_runtime.status import StatusCode

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


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


# ---------------------------------------------------------------------------- for channels

OpenServerStream: TypeAlias = Callable[[Message, ClientCallInfo], ServerStreamCall[Any]]
"""A transport's start of a server-streaming call: the one request, the call's info."""

OpenBidiStream: TypeAlias = Callable[
    [AsyncIterator[Message], ClientCallInfo], ServerStreamCall[Any]
]
"""A transport's start of a bidi call that sends `requests` itself, half-closing after the last."""

ClientStreamTerminal: TypeAlias = Callable[
    [AsyncIterator[Message], ClientCallInfo], Awaitable[Message]
]
"""A transport's client-streaming call: sends every request, returns the one response."""


def check_request(route: Route[Any, Any], request: object) -> None:
    """Raise `TypeError` unless `request` is exactly `route`'s request type.

    Every channel checks before sending: protobuf would serialize any message
    type, and the server would then fail to parse it.
    """
    if type(request) is not route.request_type:
        raise TypeError(
            f"{route.path} takes {route.request_type.DESCRIPTOR.full_name}, "
            f"got {type(request).__name__}"
        )


async def iterate(requests: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
    """Requests as an async iterator, whether the caller gave a sync or async iterable."""
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request


async def intercepted_stream_unary(
    interceptors: Sequence[ClientInterceptor],
    info: ClientCallInfo,
    requests: AsyncIterable[Any] | Iterable[Any],
    terminal: ClientStreamTerminal,
) -> Message:
    """Run a client-streaming call through `interceptors`, `terminal` at the end.

    Interceptors see the stream shape; raises `RpcError(INTERNAL)` when they
    turn the one response into none or several.
    """

    async def call_next(
        requests: AsyncIterator[Message], info: ClientCallInfo
    ) -> AsyncIterator[Message]:
        yield await terminal(requests, info)

    chain = chain_client_stream(interceptors, call_next)
    responses = [response async for response in chain(iterate(requests), info)]
    if len(responses) != 1:
        raise RpcError(StatusCode.INTERNAL, "a client interceptor broke the single response")
    return responses[0]


class InterceptedStreamCall(BidiStreamCall[RequestT, ResponseT], Generic[RequestT, ResponseT]):
    """A server-stream or bidi call running through a channel's client interceptors.

    The interceptor chain is one async iterator of responses; one pump task
    (the call's one task) drives it into a small bounded buffer, so the call
    can be iterated, its headers awaited and requests sent independently. The
    transport's call starts when the chain reaches the terminal, through
    `open_server_stream` (server-stream routes) or `open_bidi_stream`;
    `info.response_headers` and `info.trailers` are copied from it.

    Without `requests`, `send` queues requests for the chain (waiting while
    `BUFFER` are queued, so a sender cannot outrun the transport's flow
    control) and `done_writing` ends them.
    """

    BUFFER = 16
    """Responses buffered ahead of the reader, and requests queued by `send`."""

    def __init__(
        self,
        interceptors: Sequence[ClientInterceptor],
        info: ClientCallInfo,
        requests: AsyncIterator[Message] | None,
        *,
        open_server_stream: OpenServerStream,
        open_bidi_stream: OpenBidiStream,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._info = info
        self._open_server_stream = open_server_stream
        self._open_bidi_stream = open_bidi_stream
        self._feed = _BoundedQueue(loop, self.BUFFER) if requests is None else None
        self._inner: ServerStreamCall[Any] | None = None
        self._started: asyncio.Future[None] = loop.create_future()
        self._responses = _BoundedQueue(loop, self.BUFFER)
        self._error: BaseException | None = None
        self._finished = False
        chain = chain_client_stream(interceptors, self._terminal)
        source: AsyncIterator[Message] = requests if requests is not None else self._feed  # type: ignore[assignment]
        self._pump = loop.create_task(self._run(chain(source, info)))

    async def _terminal(
        self, requests: AsyncIterator[Message], info: ClientCallInfo
    ) -> AsyncIterator[Message]:
        if info.route.cardinality is Cardinality.SERVER_STREAM:
            inner = self._open_server_stream(await anext(requests), info)
        else:
            inner = self._open_bidi_stream(requests, info)
        self._inner = inner
        _resolve(self._started)
        try:
            info.response_headers = await inner.initial_metadata()
            async for response in inner:
                yield response
        finally:
            info.trailers = inner.trailing_metadata()
            inner.cancel()

    async def _run(self, responses: AsyncIterator[Message]) -> None:
        try:
            async for response in responses:
                await self._responses.put(response)
        except asyncio.CancelledError:
            self._error = RpcError(StatusCode.CANCELLED, "cancelled by the client")
        except BaseException as exc:  # delivered to the reader
            self._error = exc
        finally:
            self._finished = True
            _resolve(self._started)
            self._responses.close()

    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self

    async def __anext__(self) -> ResponseT:
        response = await self._responses.get()
        if response is None:
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        return cast(ResponseT, response)

    async def initial_metadata(self) -> Metadata:
        """Wait for and return the server's response headers."""
        await asyncio.shield(self._started)
        if self._inner is None:
            return EMPTY_METADATA
        return await self._inner.initial_metadata()

    def trailing_metadata(self) -> Metadata:
        """The server's trailers; empty until the call has ended."""
        return self._info.trailers

    def cancel(self) -> None:
        """Cancel the call; the server's handler is cancelled too."""
        if self._inner is not None:
            self._inner.cancel()
        self._pump.cancel()

    async def send(self, request: RequestT) -> None:
        """Send one request through the interceptors; waits while `BUFFER` are queued."""
        if self._feed is None:
            raise RpcError(StatusCode.FAILED_PRECONDITION, "this call sends its own requests")
        check_request(self._info.route, request)
        if self._finished:
            if isinstance(self._error, RpcError):
                raise self._error
            raise RpcError(StatusCode.FAILED_PRECONDITION, "the call has ended")
        await self._feed.put(request)

    async def done_writing(self) -> None:
        """Half-close: tell the server no more requests will follow."""
        if self._feed is not None:
            self._feed.close()

    async def __aenter__(self) -> InterceptedStreamCall[RequestT, ResponseT]:
        return self


class _BoundedQueue:
    """One producer's messages for one consumer: an intercepted call's responses for
    its reader, and the requests given to its `send` for the interceptor chain.

    `put` waits while `limit` messages are queued; `get` returns None once the
    queue is closed and empty.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._items: collections.deque[Message] = collections.deque()
        self._closed = False
        self._limit = limit
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    async def put(self, request: Message) -> None:
        while len(self._items) >= self._limit:
            self._writable = self._loop.create_future()
            await self._writable
        self._items.append(request)
        _resolve(self._readable)

    def close(self) -> None:
        self._closed = True
        _resolve(self._readable)

    async def get(self) -> Message | None:
        while not self._items:
            if self._closed:
                return None
            self._readable = self._loop.create_future()
            await self._readable
        item = self._items.popleft()
        _resolve(self._writable)
        return item

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        item = await self.get()
        if item is None:
            raise StopAsyncIteration
        return item


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
