"""`ServerEndpoint`: one client connection on a Flare server (WebSocket or QUIC).

The server half of the endpoint layer (`flare_runtime.wire.endpoint`). Runs
each call in ONE task (created when the call can start: at the request for
unary and server-stream calls, at CALL_START for client-streaming calls)
through the server's `Dispatcher`; request messages reach the handler through
a small per-call inbox, acknowledged (flow-control credit returned) as the
handler consumes them. Implements `ServerConnection` (push, close, abort,
buffer size).
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError, Message

from flare_runtime.auth import Principal
from flare_runtime.context import CallContext
from flare_runtime.details import pack_details
from flare_runtime.dispatch import ANONYMOUS, ConnectionAuth, Dispatcher, ServedRoute
from flare_runtime.errors import (
    ConfigurationError,
    ConnectionClosedError,
    LimitExceededError,
    LocalProtocolError,
    RpcError,
)
from flare_runtime.metadata import EMPTY_METADATA, Metadata
from flare_runtime.protocol.config import SERVER
from flare_runtime.protocol.events import (
    CallCancelled,
    CallStarted,
    ConnectionClosed,
    Event,
    MessageReceived,
    StreamEnded,
    WindowUpdated,
)
from flare_runtime.protocol.frames import CloseCode, PreparedPush
from flare_runtime.routing import Cardinality, Transport
from flare_runtime.server_connection import ServerConnection
from flare_runtime.status import StatusCode
from flare_runtime.wire.eager import NATIVE_EAGER_TASKS, start_eagerly
from flare_runtime.wire.endpoint import WireEndpoint, WireTransport

if TYPE_CHECKING:
    from flare_runtime.server import Server

logger = logging.getLogger("flare_runtime.endpoint")

_monotonic = time.monotonic


class _RequestInbox:
    """Requests of one client-streaming call, consumed by the handler.

    Holds raw message bytes (bounded by the call's flow-control window: the
    client cannot send more than the credit we granted) and acknowledges each
    one when the handler takes it, which is what returns credit to the client.
    """

    __slots__ = ("_call", "_ended", "_endpoint", "_error", "_items", "_waiter")

    def __init__(self, endpoint: ServerEndpoint, call: _ServerCall) -> None:
        self._endpoint = endpoint
        self._call = call
        self._items: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._error: RpcError | None = None

    def put(self, data: bytes) -> None:
        self._items.append(data)
        self._wake()

    def end(self, error: RpcError | None = None) -> None:
        self._ended = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        endpoint = self._endpoint
        call = self._call
        parse = call.bound.route.request_type.FromString
        items = self._items
        while True:
            if items:
                data = items.popleft()
                endpoint.acknowledge(call.call_id, len(data))
                try:
                    request = parse(data)
                except DecodeError:
                    raise RpcError(
                        StatusCode.INVALID_ARGUMENT, "request message does not parse"
                    ) from None
                yield request
                continue
            if self._ended:
                if self._error is not None:
                    raise self._error
                return
            self._waiter = endpoint.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class _ServerCall:
    """One call on a server connection."""

    __slots__ = ("bound", "call_id", "context", "headers_sent", "inbox", "started", "task")

    def __init__(
        self, call_id: int, bound: ServedRoute, context: CallContext, started: float
    ) -> None:
        self.started = started
        self.call_id = call_id
        self.headers_sent = False
        self.bound = bound
        self.context = context
        self.task: asyncio.Task[None] | None = None
        self.inbox: _RequestInbox | None = None


class ServerEndpoint(WireEndpoint, ServerConnection):
    """One client connection on a Flare server (WebSocket or QUIC).

    Created by a listener once the transport is up, with the connection's
    opening metadata (credentials). Registers itself with the `Server` and
    unregisters on close.
    """

    def __init__(
        self,
        server: Server,
        transport: WireTransport,
        metadata: Metadata,
        kind: Transport,
    ) -> None:
        super().__init__(transport, SERVER, server.options.protocol, kind)
        self.server = server
        self.dispatcher: Dispatcher = server.dispatcher
        self._routes = self.dispatcher.wire_routes(kind)
        self.peer = transport.peer
        self.metadata = metadata
        self.connection_auth: ConnectionAuth = ANONYMOUS
        self._auth_pending: asyncio.Future[ConnectionAuth] | None = None
        self._calls: dict[int, _ServerCall] = {}
        self._close_callbacks: list[Callable[[ServerConnection], None]] = []
        self._drained: asyncio.Future[None] | None = None
        eager = server.options.eager_handlers
        self._eager = NATIVE_EAGER_TASKS if eager is None else eager
        if self.dispatcher.auth is not None and "authorization" in metadata:
            self._auth_pending = asyncio.ensure_future(
                self.dispatcher.authenticate_connection(metadata, self.peer)
            )
            self._auth_pending.add_done_callback(self._auth_done)
        server.connection_opened(self)

    # ------------------------------------------------------------------ ServerConnection

    @property
    def principal(self) -> Principal | None:
        return self.connection_auth.principal

    @property
    def connection_id(self) -> str:
        info = self.server.connections.get(self)
        return info.connection_id if info is not None else ""

    def traffic(self) -> tuple[int, int, int]:
        conn = self.conn
        return (conn.bytes_received, conn.bytes_sent, conn.pushes_sent)

    def push(self, message: Message) -> None:
        type_id = self.dispatcher.router.push_type_id(message)
        if type_id is None:
            raise ConfigurationError(
                f"{message.DESCRIPTOR.full_name} has no push type id registered on this server"
            )
        self.push_prepared(PreparedPush(type_id, message.SerializeToString()))

    def push_prepared(self, push: PreparedPush) -> None:
        if self._closed or self.conn.closed:
            raise ConnectionClosedError("connection closed")
        self.conn.send_push(push)
        self.schedule_flush()

    @property
    def buffered_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def _close_transport(self, reason: str) -> None:
        # A graceful close sends what is queued first; a client that does not
        # read would hold it (and the socket) for ever: abort after a while.
        self.transport.close(reason)
        if self.transport.get_write_buffer_size() and not self._closed:
            timeout = self.server.options.close_timeout
            self.loop.call_later(timeout, self._abort_unless_closed, reason, timeout)

    def _abort_unless_closed(self, reason: str, timeout: float) -> None:
        if not self._closed:
            self.abort(f"{reason} (not closed within {timeout} s)")

    # ------------------------------------------------------------------ backpressure

    # Reading is paused exactly while writing is (`_write_paused`): no attribute of
    # its own, as one more per connection costs idle memory (measured: the instance
    # dict stops sharing its keys past 29 attributes, +1.3 KB).

    def pause_writing(self) -> None:
        """Above the write high-water mark: senders wait, and we stop reading from the
        client, so it cannot make us queue more answers (PONGs, responses) meanwhile."""
        if not self._write_paused and not self._closed:
            self.transport.pause_reading()
        super().pause_writing()

    def resume_writing(self) -> None:
        paused = self._write_paused
        super().resume_writing()
        if paused and not self._closed:
            self.transport.resume_reading()

    def _output_backlogged(self) -> None:
        unsent = self.transport.get_write_buffer_size()
        limit = self.server.options.max_unsent_output
        if unsent > limit and not self._aborting:
            # Reading is paused already, so what still grows is pushes (not
            # flow-controlled) or answers to calls read before: a slow consumer.
            self.dispatcher.peer_log.log(
                logger,
                logging.WARNING,
                "aborting connection from %s: %d bytes unsent (max_unsent_output %d)",
                self.peer,
                unsent,
                limit,
            )
            self.server.stats.slow_consumers += 1
            self.abort(f"slow consumer: {unsent} bytes unsent")

    def add_close_callback(self, callback: Callable[[ServerConnection], None]) -> None:
        if self._closed:
            callback(self)
        else:
            self._close_callbacks.append(callback)

    # ------------------------------------------------------------------ draining

    def go_away(self, reason: str = "server shutting down") -> None:
        """Refuse new calls, let running ones finish; close when none is left."""
        if self._closed or self.conn.closed:
            return
        if self.conn.established:
            self.conn.go_away(reason)
            self.flush()
        if not self._calls:
            self.close(reason)

    async def drain(self, grace: float) -> None:
        """`go_away`, wait up to `grace` s for calls in flight, then close."""
        self.go_away()
        if self._calls and not self._closed:
            self._drained = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), grace)
        self.close("server shutting down")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_closed(), 1.0)
        self.abort("did not close within 1 s of the server's close")

    # ------------------------------------------------------------------ events

    def _handle_events(self, events: list[Event]) -> None:
        # A class-level table of plain functions: no bound methods kept per
        # connection (idle memory), one dict lookup per event.
        dispatch = _SERVER_EVENT_HANDLERS
        for event in events:
            handler = dispatch.get(type(event))
            if handler is not None:
                handler(self, event)

    def _on_call_started(self, event: Any) -> None:
        call_id: int = event.call_id
        bound = self._routes.get(event.wire_id)
        if bound is None:
            self.dispatcher.stats.unknown_routes += 1
            error = self.dispatcher.unknown_route_error(event.wire_id)
            self.conn.end_call(call_id, error.code, error.message)
            return
        deadline = event.deadline
        if deadline is None:
            default_timeout = bound.route.options.default_timeout
            if default_timeout is not None:
                # The route's default timeout: the protocol enforces it like a
                # client's own (same connection timer, same DEADLINE_EXCEEDED).
                deadline = _monotonic() + default_timeout
                self.conn.set_deadline(call_id, deadline)
                self._deadline_added = True
        else:
            self._deadline_added = True
        metadata = EMPTY_METADATA
        if event.metadata:
            try:
                metadata = Metadata(event.metadata)
            except ValueError as exc:  # a key the wire allows but metadata does not
                self.conn.end_call(call_id, StatusCode.INVALID_ARGUMENT, str(exc))
                return
        context = CallContext(
            bound.route,
            self.transport_kind,
            metadata,
            deadline,
            self.peer,
            self.connection_auth.principal,
            self,
        )
        call = _ServerCall(call_id, bound, context, self.received_at)
        self._calls[call_id] = call
        cardinality = bound.route.cardinality
        if cardinality is Cardinality.CLIENT_STREAM or cardinality is Cardinality.BIDI_STREAM:
            call.inbox = _RequestInbox(self, call)
            call.task = self.loop.create_task(self._run_streaming(call, None))
        if event.message is not None:  # a compact call start: the request, half-closed
            self._on_request(call, event.message, True)

    def _on_message(self, event: Any) -> None:
        call = self._calls.get(event.call_id)
        if call is not None:
            self._on_request(call, event.data, event.end_stream)

    def _on_request(self, call: _ServerCall, data: bytes, end_stream: bool) -> None:
        limit = call.bound.route.options.max_message_bytes
        if limit is not None and len(data) > limit:
            self._fail_call(
                call,
                StatusCode.RESOURCE_EXHAUSTED,
                f"request message of {len(data)} bytes exceeds this method's limit of {limit}",
            )
            return
        inbox = call.inbox
        if inbox is not None:
            inbox.put(data)
            if end_stream:
                inbox.end()
            return
        if call.task is not None:
            self._fail_call(call, StatusCode.INVALID_ARGUMENT, "more than one request message")
            return
        try:
            request = call.bound.route.request_type.FromString(data)
        except DecodeError:
            self._fail_call(call, StatusCode.INVALID_ARGUMENT, "request message does not parse")
            return
        if call.bound.route.cardinality is Cardinality.UNARY:
            # No acknowledgement: the call is short and END_CALL releases the bytes.
            if self._eager:
                call.task = start_eagerly(self.loop, self._run_unary(call, request))
            else:
                call.task = self.loop.create_task(self._run_unary(call, request))
        else:
            # A stream may live long: give the request's credit back now.
            self.conn.acknowledge(call.call_id, len(data))
            call.task = self.loop.create_task(self._run_streaming(call, request))

    def _on_stream_ended(self, event: Any) -> None:
        call = self._calls.get(event.call_id)
        if call is None:
            return
        if call.inbox is not None:
            call.inbox.end()
        elif call.task is None:
            self._fail_call(call, StatusCode.INVALID_ARGUMENT, "no request message")

    def _on_call_cancelled(self, event: Any) -> None:
        call = self._calls.pop(event.call_id, None)
        if call is None:
            return
        call.bound.meter.ended(event.code, call.started, call.context)
        if call.inbox is not None:
            call.inbox.end(RpcError(event.code, event.reason))
        if call.task is not None:
            call.task.cancel()
        self._wake_credit(event.call_id)
        self._call_finished()

    def _on_window_updated(self, event: Any) -> None:
        self._wake_credit(event.call_id)

    def _on_connection_closed(self, event: Any) -> None:
        if not event.by_peer and event.code is not CloseCode.NO_ERROR:
            # The client broke the protocol (or stopped answering PINGs).
            self.dispatcher.peer_log.log(
                logger,
                logging.INFO,
                "closing connection from %s: %s (%s)",
                self.peer,
                event.reason,
                event.code.name,
            )
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.bound.meter.ended(StatusCode.CANCELLED, call.started, call.context)
            if call.inbox is not None:
                call.inbox.end(RpcError(StatusCode.CANCELLED, "connection closed"))
            if call.task is not None:
                call.task.cancel()
        self._wake_all_writers()
        if self._aborting:
            return  # `abort` cuts the transport itself, sending nothing
        # Send our CLOSE (if we closed) before closing the transport.
        self.flush()
        if not self._closed:
            self._close_transport(event.reason)

    def _fail_call(self, call: _ServerCall, code: StatusCode, message: str) -> None:
        if self._calls.pop(call.call_id, None) is not None:
            call.bound.meter.ended(code, call.started, call.context)
        if call.task is not None:
            call.task.cancel()
        self.conn.end_call(call.call_id, code, message)
        self.schedule_flush()
        self._call_finished()

    def _call_finished(self) -> None:
        if not self._calls and self.conn.going_away:
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
            self.close("server shutting down")

    def _on_lost(self, exc: BaseException | None) -> None:
        self._on_connection_closed(ConnectionClosed(CloseCode.NO_ERROR, "connection lost", True))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.server.connection_closed(self)
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("connection close callback failed")

    def _auth_done(self, future: asyncio.Future[ConnectionAuth]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.connection_auth = future.result()
            error = self.connection_auth.error
            if error is not None:
                self.dispatcher.peer_log.log(
                    logger,
                    logging.INFO,
                    "connection from %s failed authentication: %s",
                    self.peer,
                    error.message,
                )
        self._auth_pending = None

    async def _connection_auth(self) -> ConnectionAuth:
        pending = self._auth_pending
        if pending is not None:
            # The result, not self.connection_auth: `_auth_done` runs as a
            # callback later, after a call task may already have resumed here.
            return await asyncio.shield(pending)
        return self.connection_auth

    # ------------------------------------------------------------------ call tasks

    async def _run_unary(self, call: _ServerCall, request: Message) -> None:
        context = call.context
        try:
            auth = (
                self.connection_auth
                if self._auth_pending is None
                else await self._connection_auth()
            )
            response = await call.bound.unary(request, context, auth)
            if self._write_paused:
                await self.wait_output_drained()  # the client is not reading: hold it here
            self._finish(call, response)
        except RpcError as error:
            self._end(call, error)
        except asyncio.CancelledError:
            self._forget(call)
        except BaseException:
            self._end(call, RpcError(StatusCode.INTERNAL, "internal error"))
            raise

    async def _run_streaming(self, call: _ServerCall, request: Message | None) -> None:
        """Run a server-stream (`request` given) or client-/bidi-stream call (`call.inbox`)."""
        dispatcher = self.dispatcher
        bound = call.bound
        try:
            auth = (
                self.connection_auth
                if self._auth_pending is None
                else await self._connection_auth()
            )
            if request is not None:
                responses = dispatcher.server_stream(bound, request, call.context, auth)
                await self._send_stream(call, responses)
            else:
                inbox = call.inbox
                assert inbox is not None
                if bound.route.cardinality is Cardinality.CLIENT_STREAM:
                    response = await dispatcher.client_stream(
                        bound, inbox.__aiter__(), call.context, auth
                    )
                    if self._write_paused:
                        await self.wait_output_drained()
                    self._finish(call, response)
                    return
                responses = dispatcher.bidi_stream(bound, inbox.__aiter__(), call.context, auth)
                await self._send_stream(call, responses)
            self._end(call, None)
        except RpcError as error:
            self._end(call, error)
        except ConnectionClosedError:
            self._forget(call)
        except asyncio.CancelledError:
            self._forget(call)
        except BaseException:
            # A failure of Flare itself (handlers' exceptions are RpcErrors by now):
            # end the call rather than leave the client waiting, then let it surface.
            self._end(call, RpcError(StatusCode.INTERNAL, "internal error"))
            raise

    async def _send_stream(self, call: _ServerCall, responses: AsyncIterator[Message]) -> None:
        call_id = call.call_id
        response_type = call.bound.route.response_type
        try:
            async for response in responses:
                if type(response) is not response_type:
                    raise self.dispatcher.wrong_response_error(call.bound.route, response)
                data = response.SerializeToString()
                if not self.can_write(call_id):
                    await self.wait_writable(call_id)
                if self._calls.get(call_id) is not call:
                    return  # ended meanwhile (cancelled, deadline); the task is being cancelled
                self._send_headers_once(call)
                try:
                    self.conn.send_message(call_id, data)
                except LimitExceededError as exc:
                    raise RpcError(StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
                self.schedule_flush()
        finally:
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _finish(self, call: _ServerCall, response: Message) -> None:
        """Send the one response of a unary or client-streaming call and end it OK."""
        if call.context.has_metadata_to_send(call.headers_sent):
            self._send_response(call, response)  # metadata to send: the general path
            self._end(call, None)
            return
        if type(response) is not call.bound.route.response_type:
            raise self.dispatcher.wrong_response_error(call.bound.route, response)
        # No metadata: the response and the OK status leave as one frame (§3.4).
        self._end(call, None, final=response.SerializeToString())

    def _send_response(self, call: _ServerCall, response: Message) -> None:
        if type(response) is not call.bound.route.response_type:
            raise self.dispatcher.wrong_response_error(call.bound.route, response)
        if self._calls.get(call.call_id) is not call:
            return
        self._send_headers_once(call)
        try:
            self.conn.send_message(call.call_id, response.SerializeToString())
        except LimitExceededError as exc:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None

    def _send_headers_once(self, call: _ServerCall) -> None:
        if call.headers_sent:
            return
        call.headers_sent = True
        headers = call.context.response_headers
        if headers is not EMPTY_METADATA and headers:
            try:
                self.conn.send_headers(call.call_id, headers)
            except LimitExceededError as exc:
                raise RpcError(StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None

    def _end(self, call: _ServerCall, error: RpcError | None, final: bytes | None = None) -> None:
        """End `call` with `error` (None: OK); `final`: its last message, sent with the end."""
        if self._calls.pop(call.call_id, None) is None:
            return  # cancelled or ended by the protocol already
        call.bound.meter.ended(
            StatusCode.OK if error is None else error.code, call.started, call.context
        )
        conn = self.conn
        try:
            if final is not None:
                conn.send_final_message(call.call_id, final)
            elif error is None:
                conn.end_call(call.call_id, StatusCode.OK, "", b"", call.context.trailers.entries())
            else:
                conn.end_call(
                    call.call_id,
                    error.code,
                    error.message,
                    pack_details(error.code, error.message, error.details),
                    call.context.trailers.entries(),
                )
        except LimitExceededError as exc:
            conn.end_call(call.call_id, StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except (LocalProtocolError, ConnectionClosedError):
            pass  # the connection is closing; nothing more to say on it
        if self._calls:
            self.schedule_flush()  # more calls in flight: batch their output
        else:
            self.flush()  # the only call: answer now, a loop iteration sooner
            self._call_finished()

    def _forget(self, call: _ServerCall) -> None:
        if self._calls.pop(call.call_id, None) is not None:
            call.bound.meter.ended(StatusCode.CANCELLED, call.started, call.context)
            # Cancelled by us (connection closing); tell the client if we still can.
            with contextlib.suppress(LocalProtocolError, ConnectionClosedError):
                self.conn.end_call(call.call_id, StatusCode.CANCELLED, "call cancelled")
            self.schedule_flush()
            self._call_finished()


_SERVER_EVENT_HANDLERS: dict[type[Event], Callable[[ServerEndpoint, Any], None]] = {
    CallStarted: ServerEndpoint._on_call_started,
    MessageReceived: ServerEndpoint._on_message,
    StreamEnded: ServerEndpoint._on_stream_ended,
    CallCancelled: ServerEndpoint._on_call_cancelled,
    WindowUpdated: ServerEndpoint._on_window_updated,
    ConnectionClosed: ServerEndpoint._on_connection_closed,
}


__all__ = ["ServerEndpoint"]
