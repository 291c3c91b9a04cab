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
How a channel runs client interceptors around a streaming call is in
`flare_runtime.calls`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar

from google.protobuf.message import Message

from flare_runtime.context import CallContext
from flare_runtime.metadata import EMPTY_METADATA, Metadata
from flare_runtime.routing import Route

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
