"""`WireChannel`: the client `Channel` over the Flare wire protocol (WebSocket, QUIC).

Built on `ClientEndpoint` (the client half of the endpoint layer). Costs per
call: a unary call is one future and one dict entry, no task; a streaming
call is one small object; a bidi call given a request iterable adds one task
that feeds it.

Pushes: messages the server pushes arrive by push type id and are decoded
with the push tables given at connect. `on_push` registers a callback, called
with every push as it arrives; `pushes()` iterates them. A push is buffered
for `pushes()` only while an iterator is open, or while no callback is
registered (so pushes that arrive before the application starts iterating
are kept): pushes that callbacks handle never fill the buffer. Buffered pushes
are bounded (``max_pending_pushes``): when an iterating application does not
keep up, the channel stops reading from the socket, which back-pressures the
server instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import DecodeError, Message

from flare_runtime.calls import BidiStreamCall, check_request
from flare_runtime.client import Channel
from flare_runtime.details import unpack_details
from flare_runtime.errors import (
    ConnectionClosedError,
    LimitExceededError,
    LocalProtocolError,
    RpcError,
)
from flare_runtime.interceptors import ClientCallInfo, ClientInterceptor
from flare_runtime.metadata import EMPTY_METADATA, Metadata, MetadataLike
from flare_runtime.protocol.config import CLIENT, ProtocolConfig
from flare_runtime.protocol.events import (
    CallEnded,
    ConnectionClosed,
    Event,
    GoAwayReceived,
    HeadersReceived,
    MessageReceived,
    PushReceived,
    WindowUpdated,
)
from flare_runtime.routing import Route, Transport
from flare_runtime.status import StatusCode
from flare_runtime.wire.endpoint import WireEndpoint, WireTransport

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

_monotonic = time.monotonic
logger = logging.getLogger("flare_runtime.client")

PushCallback = Callable[[Message], None]

CLOSE_TIMEOUT = 2.0
"""Seconds `WireChannel.close` waits for the transport to close before aborting it."""


class ClientCall:
    """Client-side state of one call (`ClientEndpoint.start_call`): received messages,
    headers, final status. `future`, when set, receives the one response of a call
    that ends with it (unary, client stream)."""

    __slots__ = (
        "call_id",
        "count",
        "data",
        "ended",
        "error",
        "future",
        "header_waiter",
        "headers",
        "info",
        "messages",
        "trailers",
        "waiter",
    )

    def __init__(self, call_id: int, info: ClientCallInfo | None) -> None:
        self.call_id = call_id
        self.info = info
        self.messages: collections.deque[bytes] = collections.deque()
        self.data: bytes | None = None
        self.count = 0
        self.waiter: asyncio.Future[None] | None = None
        self.header_waiter: asyncio.Future[None] | None = None
        self.future: asyncio.Future[bytes] | None = None
        self.headers: Metadata | None = None
        self.trailers: Metadata = EMPTY_METADATA
        self.ended = False
        self.error: RpcError | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        # Someone awaiting the headers while another task iterates the call.
        waiter = self.header_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class ClientEndpoint(WireEndpoint):
    """The client end of a Flare connection; `WireChannel` calls through it.

    Calls: `start_call` (returns the call's `ClientCall`, whose events arrive
    as the server answers), `send_message`, `half_close`, `acknowledge`,
    `cancel`; the connection: `close`, `abort`, `closed`, `unavailable`.
    """

    route_observer: Callable[[Route[Any, Any]], None] | None = None
    """Called with the route of every call as it starts, before anything is written
    (a transport's hook: QUIC picks the routes allowed in 0-RTT early data with it)."""

    def __init__(
        self,
        transport: WireTransport,
        config: ProtocolConfig,
        kind: Transport,
        push_types: Mapping[int, type[Message]],
        max_pending_pushes: int,
    ) -> None:
        self.calls: dict[int, ClientCall] = {}
        self.push_types = dict(push_types)
        self.pushes: collections.deque[Message] = collections.deque()
        self.push_callbacks: list[PushCallback] = []
        self.push_waiter: asyncio.Future[None] | None = None
        self.push_readers = 0
        """Open `WireChannel.pushes()` iterators."""
        self.max_pending_pushes = max_pending_pushes
        self.reading_paused = False
        self.close_reason = ""
        self.going_away = False
        super().__init__(transport, CLIENT, config, kind)

    # ------------------------------------------------------------------ calls

    def start_call(  # noqa: PLR0917 - called positionally on every call (keywords cost more)
        self,
        route: Route[Any, Any],
        metadata: Metadata,
        timeout: float | None,
        message: bytes | None,
        end_stream: bool,
        info: ClientCallInfo | None,
    ) -> ClientCall:
        """Start a call on `route`; `message` (if any) is its first request, `end_stream`
        half-closes after it. `timeout` None means the route's default timeout.

        Raises `RpcError`: UNAVAILABLE on a closed or draining connection,
        UNIMPLEMENTED for a route without a wire id, RESOURCE_EXHAUSTED when the
        metadata or message exceeds the server's limits.
        """
        if self._closed or self.going_away:
            raise self.unavailable(not_processed=True)
        if self.route_observer is not None:
            self.route_observer(route)
        wire_id = route.wire_id
        if not wire_id:
            raise RpcError(
                StatusCode.UNIMPLEMENTED,
                f"{route.path} has no Flare route id; call it over gRPC",
            )
        if timeout is None:
            timeout = route.options.default_timeout
        try:
            call_id = self.conn.start_call(
                wire_id,
                metadata.entries(),
                timeout=timeout,
                now=_monotonic() if timeout is not None else 0.0,
                message=message,
                end_stream=end_stream,
            )
        except LimitExceededError as exc:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except (LocalProtocolError, ConnectionClosedError):
            raise self.unavailable(not_processed=True) from None
        call = ClientCall(call_id, info)
        calls = self.calls
        calls[call_id] = call
        if len(calls) == 1:
            self.flush()  # the only call: send now, a loop iteration sooner
        else:
            self.schedule_flush()  # batch with the calls started alongside
        if timeout is not None:
            self.rearm_timer()
        return call

    def send_message(self, call: ClientCall, data: bytes) -> None:
        """Send one request on `call` (check `can_write` / `wait_writable` first).

        Raises like `Connection.send_message` (`LimitExceededError`,
        `LocalProtocolError` after the half-close).
        """
        self.conn.send_message(call.call_id, data)
        self.schedule_flush()

    def half_close(self, call: ClientCall) -> None:
        """Send no more requests on `call` (ignored once the call or connection ended)."""
        if call.ended:
            return
        with contextlib.suppress(LocalProtocolError, ConnectionClosedError):
            self.conn.half_close(call.call_id)
        self.schedule_flush()

    def cancel(self, call: ClientCall) -> None:
        """Cancel `call` (the server's handler is cancelled); it ends with CANCELLED."""
        if self.calls.pop(call.call_id, None) is None:
            return
        call.ended = True
        call.error = RpcError(StatusCode.CANCELLED, "cancelled by the client")
        with contextlib.suppress(LocalProtocolError, ConnectionClosedError):
            self.conn.cancel(call.call_id, StatusCode.CANCELLED, "cancelled by the client")
        self.schedule_flush()
        call.wake()

    def close(self, reason: str = "client closing") -> None:
        """End every open call with CANCELLED, then close (see `WireEndpoint.close`)."""
        if self._closed or self._aborting:
            return
        calls, self.calls = self.calls, {}
        for call in calls.values():
            self._end_call(call, CallEnded(call.call_id, StatusCode.CANCELLED, "channel closed"))
        super().close(reason)

    def abort(self, reason: str = "") -> None:
        """Close the transport at once; open calls fail UNAVAILABLE (see `WireEndpoint.abort`)."""
        super().abort(reason)
        if not self._closed:
            self.connection_lost(None)

    # ------------------------------------------------------------------ events

    def _handle_events(self, events: list[Event]) -> None:
        calls = self.calls
        for event in events:
            kind = type(event)
            if kind is MessageReceived:
                message = cast(MessageReceived, event)
                call = calls.get(message.call_id)
                if call is None:
                    continue
                if call.future is not None:
                    # The one response of a call that ends with it: no
                    # acknowledgement, END_CALL releases its bytes (a WINDOW_UPDATE
                    # for a finished call would be wasted).
                    call.data = message.data
                    call.count += 1
                    continue
                call.messages.append(message.data)
                call.wake()
            elif kind is CallEnded:
                ended = cast(CallEnded, event)
                call = calls.pop(ended.call_id, None)
                if call is None:
                    continue
                final = ended.final
                if final is not None:  # the last message came with the end (§3.4)
                    if call.future is not None:
                        call.data = final
                        call.count += 1
                    else:
                        call.messages.append(final)
                self._end_call(call, ended)
            elif kind is HeadersReceived:
                headers = cast(HeadersReceived, event)
                call = calls.get(headers.call_id)
                if call is not None:
                    call.headers = _metadata(headers.metadata)
                    if call.info is not None:
                        call.info.response_headers = call.headers
                    call.wake()
            elif kind is PushReceived:
                self._push_received(cast(PushReceived, event))
            elif kind is WindowUpdated:
                self._wake_credit(cast(WindowUpdated, event).call_id)
            elif kind is GoAwayReceived:
                self.going_away = True
                self.close_reason = cast(GoAwayReceived, event).reason or "server going away"
            elif kind is ConnectionClosed:
                closed = cast(ConnectionClosed, event)
                self.close_reason = closed.reason or closed.code.name.lower()
                self._fail_all(self.close_reason)
                self.flush()
                if not self._aborting:
                    self.transport.close(closed.reason)

    def _end_call(self, call: ClientCall, ended: CallEnded) -> None:
        call.ended = True
        if ended.trailers:
            call.trailers = _metadata(ended.trailers)
            if call.info is not None:
                call.info.trailers = call.trailers
        if ended.status:  # not OK
            call.error = RpcError(
                ended.status,
                ended.message,
                unpack_details(ended.details),
                # Ended here with UNAVAILABLE: the server's GOAWAY excluded it (§3.10).
                not_processed=ended.local and ended.status is StatusCode.UNAVAILABLE,
            )
        future = call.future
        if future is not None and not future.done():
            if call.error is not None:
                future.set_exception(call.error)
            elif call.count == 1 and call.data is not None:
                future.set_result(call.data)
            else:
                future.set_exception(
                    RpcError(
                        StatusCode.INTERNAL,
                        f"expected one response message, got {call.count}",
                    )
                )
        if call.waiter is not None or call.header_waiter is not None:
            call.wake()  # someone iterates the call or awaits its headers
        if self._credit_waiters:
            self._wake_credit(call.call_id)

    def _fail_all(self, reason: str) -> None:
        calls, self.calls = self.calls, {}
        for call in calls.values():
            self._end_call(
                call,
                CallEnded(call.call_id, StatusCode.UNAVAILABLE, f"connection closed: {reason}"),
            )
        self._wake_push()

    def _push_received(self, event: PushReceived) -> None:
        message_type = self.push_types.get(event.type_id)
        if message_type is None:
            return  # a push type this client does not know: newer server; ignore
        try:
            message = message_type.FromString(event.data)
        except DecodeError:
            return
        callbacks = self.push_callbacks
        for callback in callbacks:
            try:
                callback(message)
            except Exception:  # the application's bug must not break the connection
                logger.exception("push callback %r failed", callback)
        if callbacks and not self.push_readers:
            return  # handled; buffering it for nobody would stall reading (and every call)
        self.pushes.append(message)
        self._wake_push()
        if len(self.pushes) >= self.max_pending_pushes and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def _wake_push(self) -> None:
        waiter = self.push_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push_taken(self) -> None:
        """The application took a push: resume reading once half the buffer is free."""
        if self.reading_paused and len(self.pushes) <= self.max_pending_pushes // 2:
            self.reading_paused = False
            self.transport.resume_reading()

    def _on_lost(self, exc: BaseException | None) -> None:
        if not self.close_reason:
            self.close_reason = f"connection lost: {exc}" if exc else "connection lost"
        self._fail_all(self.close_reason)

    def unavailable(self, *, not_processed: bool = False) -> RpcError:
        """The error for a call attempted on a closed or draining connection.

        `not_processed`: nothing of the call was sent (`RpcError.not_processed`).
        """
        reason = self.close_reason or "connection closed"
        return RpcError(StatusCode.UNAVAILABLE, reason, not_processed=not_processed)


class WireChannel(Channel):
    """A `Channel` over one Flare connection (WebSocket or QUIC), through its `ClientEndpoint`."""

    def __init__(
        self,
        endpoint: ClientEndpoint,
        *,
        interceptors: Iterable[ClientInterceptor] = (),
    ) -> None:
        super().__init__(interceptors=interceptors)
        self.endpoint = endpoint

    # ------------------------------------------------------------------ pushes

    def on_push(self, callback: PushCallback) -> None:
        """Call `callback(message)` for every push (in the event loop; must not block).

        Pushes buffered before the first callback, while no `pushes()`
        iterator is open, are handed to it at once.
        """
        endpoint = self.endpoint
        endpoint.push_callbacks.append(callback)
        if endpoint.push_readers or not endpoint.pushes:
            return
        buffered, endpoint.pushes = endpoint.pushes, collections.deque()
        for message in buffered:
            try:
                callback(message)
            except Exception:
                logger.exception("push callback %r failed", callback)
        endpoint.push_taken()

    async def pushes(self) -> AsyncGenerator[Message, None]:
        """Iterate pushed messages (decoded by push type id) until the channel closes.

        While the iterator is open every push is buffered for it (bounded by
        ``max_pending_pushes``: a reader that falls behind pauses the socket).
        """
        endpoint = self.endpoint
        endpoint.push_readers += 1
        try:
            while True:
                if endpoint.pushes:
                    message = endpoint.pushes.popleft()
                    endpoint.push_taken()
                    yield message
                    continue
                if endpoint.closed:
                    return
                endpoint.push_waiter = endpoint.loop.create_future()
                try:
                    await endpoint.push_waiter
                finally:
                    endpoint.push_waiter = None
        finally:
            endpoint.push_readers -= 1

    # ------------------------------------------------------------------ calls

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
        call = self.endpoint.start_call(
            route,
            Metadata.coerce(metadata) if metadata else EMPTY_METADATA,
            timeout,
            request.SerializeToString(),
            True,
            info,
        )
        future: asyncio.Future[bytes] = self.endpoint.loop.create_future()
        call.future = future
        try:
            data = await future
        except asyncio.CancelledError:
            self.endpoint.cancel(call)
            raise
        return _parse(route, data)

    def _open_server_stream(
        self, request: Message, info: ClientCallInfo
    ) -> _WireStreamCall[Any, Any]:
        call = self.endpoint.start_call(
            info.route,
            info.metadata,
            info.timeout,
            request.SerializeToString(),
            True,
            info,
        )
        return _WireStreamCall(self, info.route, call)

    def _open_bidi_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any] | None, info: ClientCallInfo
    ) -> _WireStreamCall[Any, Any]:
        call = self.endpoint.start_call(
            info.route,
            info.metadata,
            info.timeout,
            None,
            False,
            info,
        )
        stream: _WireStreamCall[Any, Any] = _WireStreamCall(self, info.route, call)
        if requests is not None:
            stream.start_sending(requests)
        return stream

    async def _client_stream(
        self, requests: AsyncIterable[Any] | Iterable[Any], info: ClientCallInfo
    ) -> Message:
        route: Route[Any, Message] = info.route
        call = self.endpoint.start_call(
            route,
            info.metadata,
            info.timeout,
            None,
            False,
            info,
        )
        future: asyncio.Future[bytes] = self.endpoint.loop.create_future()
        call.future = future
        stream = _WireStreamCall(self, route, call)
        try:
            await stream.send_all(requests)
            data = await future
        except asyncio.CancelledError:
            self.endpoint.cancel(call)
            raise
        return _parse(route, data)

    async def close(self) -> None:
        """Close the connection: pending calls fail with CANCELLED."""
        endpoint = self.endpoint
        endpoint.close("client closing")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(endpoint.wait_closed(), CLOSE_TIMEOUT)
        endpoint.abort("did not close in time")

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by either side)."""
        return self.endpoint.closed

    @property
    def accepting_calls(self) -> bool:
        """False once the connection is closed or the server sent GOAWAY."""
        endpoint = self.endpoint
        return not (endpoint.closed or endpoint.going_away)


class _WireStreamCall(BidiStreamCall[RequestT, ResponseT], Generic[RequestT, ResponseT]):
    """A streaming call on a `WireChannel`: iterate responses; send requests (bidi)."""

    def __init__(
        self, channel: WireChannel, route: Route[RequestT, ResponseT], call: ClientCall
    ) -> None:
        self._channel = channel
        self._endpoint = channel.endpoint
        self._route = route
        self._call = call
        self._parse = route.response_type.FromString
        self._sender: asyncio.Task[None] | None = None

    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self

    async def __anext__(self) -> ResponseT:
        call = self._call
        endpoint = self._endpoint
        while True:
            if call.messages:
                data = call.messages.popleft()
                if not call.ended:
                    endpoint.acknowledge(call.call_id, len(data))
                try:
                    return self._parse(data)
                except DecodeError:
                    self.cancel()
                    raise RpcError(StatusCode.INTERNAL, "response message does not parse") from None
            if call.ended:
                if call.error is not None:
                    raise call.error
                raise StopAsyncIteration
            call.waiter = endpoint.loop.create_future()
            try:
                await call.waiter
            except asyncio.CancelledError:
                self.cancel()
                raise
            finally:
                call.waiter = None

    async def initial_metadata(self) -> Metadata:
        call = self._call
        while call.headers is None and not call.messages and not call.ended:
            # Several tasks may wait (the caller and an interceptor chain's
            # terminal): they share one future, shielded so that cancelling
            # one waiter leaves the others waiting.
            waiter = call.header_waiter
            if waiter is None or waiter.done():
                waiter = call.header_waiter = self._endpoint.loop.create_future()
            await asyncio.shield(waiter)
        return call.headers if call.headers is not None else EMPTY_METADATA

    def trailing_metadata(self) -> Metadata:
        return self._call.trailers

    def cancel(self) -> None:
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        if not self._call.ended:
            self._endpoint.cancel(self._call)

    async def send(self, request: RequestT) -> None:
        check_request(self._route, request)
        call = self._call
        endpoint = self._endpoint
        if call.ended:
            if call.error is not None:
                raise call.error
            raise RpcError(StatusCode.FAILED_PRECONDITION, "the call has ended")
        call_id = call.call_id
        if not endpoint.can_write(call_id):
            try:
                await endpoint.wait_writable(call_id)
            except ConnectionClosedError:
                raise endpoint.unavailable() from None
            if call.ended:
                if call.error is not None:
                    raise call.error
                return
        try:
            endpoint.send_message(call, request.SerializeToString())
        except LimitExceededError as exc:
            self.cancel()
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except LocalProtocolError:
            raise RpcError(StatusCode.FAILED_PRECONDITION, "done_writing was called") from None

    async def done_writing(self) -> None:
        self._endpoint.half_close(self._call)

    async def send_all(self, requests: AsyncIterable[RequestT] | Iterable[RequestT]) -> None:
        """Send every request, then half-close; stops early if the call ends."""
        if isinstance(requests, AsyncIterable):
            async for request in requests:
                if self._call.ended:
                    return
                await self.send(request)
        else:
            for request in requests:
                if self._call.ended:
                    return
                await self.send(request)
        await self.done_writing()

    def start_sending(self, requests: AsyncIterable[RequestT] | Iterable[RequestT]) -> None:
        """Send `requests` from a background task (the bidi call's one task)."""
        self._sender = self._endpoint.loop.create_task(self._send_quietly(requests))

    async def _send_quietly(self, requests: AsyncIterable[RequestT] | Iterable[RequestT]) -> None:
        # Failures of the call surface through iteration; an error raised by
        # the caller's own request iterator cancels the call.
        try:
            await self.send_all(requests)
        except RpcError:
            pass
        except Exception:
            self.cancel()
            raise


def _metadata(pairs: tuple[tuple[str, Any], ...]) -> Metadata:
    """Response metadata from the wire; entries with keys metadata forbids are dropped."""
    try:
        return Metadata(pairs)
    except ValueError:
        valid = []
        for pair in pairs:
            with contextlib.suppress(ValueError):
                Metadata((pair,))
                valid.append(pair)
        return Metadata(valid)


def _parse(route: Route[Any, ResponseT], data: bytes) -> ResponseT:
    try:
        return route.response_type.FromString(data)
    except DecodeError:
        raise RpcError(StatusCode.INTERNAL, "response message does not parse") from None
