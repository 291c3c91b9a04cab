"""Typed interceptors for servers and clients, composed with ``call_next``.

An interceptor wraps every call: it may read or add metadata, time the call,
translate errors, or refuse the call by raising `RpcError`. Interceptors run
in list order on the way in and unwind in reverse order on the way out::

    class Timing(ServerInterceptor):
        async def intercept_unary(self, request, context, call_next):
            started = time.perf_counter()
            try:
                return await call_next(request, context)
            finally:
                context.set_trailers({"x-elapsed": f"{time.perf_counter() - started:.6f}"})

Two shapes exist on each side, as in connect-python:

* **unary** calls see one request and return one response;
* **stream** calls (server-stream, client-stream and bidi alike) see an async
  iterator of requests and return an async iterator of responses. A
  server-stream call's request iterator yields exactly one request; a
  client-stream call's response iterator yields exactly one response.

The base classes pass calls through unchanged; override only what you need.

The bottom of this module is for `Channel` implementations: the one
interceptor-driven streaming call (`InterceptedStreamCall`) and client-stream
call (`intercepted_stream_unary`) every transport shares, given the
transport's own functions that start the call on the wire.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeAlias, TypeVar, cast

from google.protobuf.message import Message

from flare_runtime.client import BidiStreamCall, ServerStreamCall
from flare_runtime.context import CallContext
from flare_runtime.errors import RpcError
from flare_runtime.metadata import EMPTY_METADATA, Metadata
from flare_runtime.routing import Cardinality, Route
from flare_runtime.status import StatusCode

UnaryCallNext: TypeAlias = Callable[[Message, CallContext], Awaitable[Message]]
"""The rest of the server chain for a unary call: the next interceptor or the handler."""

StreamCallNext: TypeAlias = Callable[[AsyncIterator[Message], CallContext], AsyncIterator[Message]]
"""The rest of the server chain for a streaming call."""


class ServerInterceptor:
    """Wraps server calls. Subclass and override `intercept_unary` / `intercept_stream`.

    Contract: call ``call_next`` at most once and return (or re-raise) what it
    gives; raising `RpcError` ends the call with that status. Exceptions other
    than `RpcError` become INTERNAL like a handler's. The context is the same
    object the handler receives: headers and trailers set on it are sent.
    """

    async def intercept_unary(
        self, request: Message, context: CallContext, call_next: UnaryCallNext
    ) -> Message:
        """Intercept a unary call; the default passes it through."""
        return await call_next(request, context)

    def intercept_stream(
        self,
        requests: AsyncIterator[Message],
        context: CallContext,
        call_next: StreamCallNext,
    ) -> AsyncIterator[Message]:
        """Intercept a streaming call; the default passes it through.

        Return an async iterator of responses (typically an async generator
        that iterates ``call_next(requests, context)``).
        """
        return call_next(requests, context)


class ClientCallInfo:
    """What a client interceptor knows about an outgoing call.

    Interceptors may replace `metadata` and `timeout` before calling
    ``call_next``. `response_headers` and `trailers` are filled in by the
    channel when the server sends them (for unary calls: by the time
    ``call_next`` returns or raises).
    """

    __slots__ = ("metadata", "response_headers", "route", "timeout", "trailers")

    def __init__(self, route: Route[Any, Any], metadata: Metadata, timeout: float | None) -> None:
        self.route = route
        self.metadata = metadata
        self.timeout = timeout
        self.response_headers: Metadata = EMPTY_METADATA
        self.trailers: Metadata = EMPTY_METADATA


ClientUnaryCallNext: TypeAlias = Callable[[Message, ClientCallInfo], Awaitable[Message]]
"""The rest of the client chain for a unary call: the next interceptor or the wire."""

ClientStreamCallNext: TypeAlias = Callable[
    [AsyncIterator[Message], ClientCallInfo], AsyncIterator[Message]
]
"""The rest of the client chain for a streaming call."""


class ClientInterceptor:
    """Wraps client calls. Subclass and override `intercept_unary` / `intercept_stream`.

    The stream shape is the same as on the server: an async iterator of
    requests in, an async iterator of responses out. Raising `RpcError`
    fails the call with that status without sending anything.
    """

    async def intercept_unary(
        self, request: Message, info: ClientCallInfo, call_next: ClientUnaryCallNext
    ) -> Message:
        """Intercept a unary call; the default passes it through."""
        return await call_next(request, info)

    def intercept_stream(
        self,
        requests: AsyncIterator[Message],
        info: ClientCallInfo,
        call_next: ClientStreamCallNext,
    ) -> AsyncIterator[Message]:
        """Intercept a streaming call; the default passes it through."""
        return call_next(requests, info)


def chain_server_unary(
    interceptors: Sequence[ServerInterceptor], terminal: UnaryCallNext
) -> UnaryCallNext:
    """Compose `interceptors` around `terminal`; the first interceptor runs first."""
    return _compose(interceptors, terminal, _bind_unary)


def chain_server_stream(
    interceptors: Sequence[ServerInterceptor], terminal: StreamCallNext
) -> StreamCallNext:
    """Compose `interceptors` around `terminal`; the first interceptor runs first."""
    return _compose(interceptors, terminal, _bind_stream)


def chain_client_unary(
    interceptors: Sequence[ClientInterceptor], terminal: ClientUnaryCallNext
) -> ClientUnaryCallNext:
    """Compose client `interceptors` around `terminal`; the first runs first."""
    return _compose(interceptors, terminal, _bind_client_unary)


def chain_client_stream(
    interceptors: Sequence[ClientInterceptor], terminal: ClientStreamCallNext
) -> ClientStreamCallNext:
    """Compose client `interceptors` around `terminal`; the first runs first."""
    return _compose(interceptors, terminal, _bind_client_stream)


_Interceptor = TypeVar("_Interceptor")
_Next = TypeVar("_Next")


def _compose(
    interceptors: Sequence[_Interceptor],
    terminal: _Next,
    bind: Callable[[_Interceptor, _Next], _Next],
) -> _Next:
    call_next = terminal
    for interceptor in reversed(interceptors):
        call_next = bind(interceptor, call_next)
    return call_next


# The binders give each closure its own (interceptor, next) pair.


def _bind_unary(interceptor: ServerInterceptor, call_next: UnaryCallNext) -> UnaryCallNext:
    return functools.partial(_call_unary, interceptor, call_next)


def _bind_stream(interceptor: ServerInterceptor, call_next: StreamCallNext) -> StreamCallNext:
    return functools.partial(_call_stream, interceptor, call_next)


def _bind_client_unary(
    interceptor: ClientInterceptor, call_next: ClientUnaryCallNext
) -> ClientUnaryCallNext:
    return functools.partial(_call_client_unary, interceptor, call_next)


def _bind_client_stream(
    interceptor: ClientInterceptor, call_next: ClientStreamCallNext
) -> ClientStreamCallNext:
    return functools.partial(_call_client_stream, interceptor, call_next)


def _call_unary(
    interceptor: ServerInterceptor,
    call_next: UnaryCallNext,
    request: Message,
    context: CallContext,
) -> Awaitable[Message]:
    return interceptor.intercept_unary(request, context, call_next)


def _call_stream(
    interceptor: ServerInterceptor,
    call_next: StreamCallNext,
    requests: AsyncIterator[Message],
    context: CallContext,
) -> AsyncIterator[Message]:
    return interceptor.intercept_stream(requests, context, call_next)


def _call_client_unary(
    interceptor: ClientInterceptor,
    call_next: ClientUnaryCallNext,
    request: Message,
    info: ClientCallInfo,
) -> Awaitable[Message]:
    return interceptor.intercept_unary(request, info, call_next)


def _call_client_stream(
    interceptor: ClientInterceptor,
    call_next: ClientStreamCallNext,
    requests: AsyncIterator[Message],
    info: ClientCallInfo,
) -> AsyncIterator[Message]:
    return interceptor.intercept_stream(requests, info, call_next)


# ---------------------------------------------------------------------------- for channels

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

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
